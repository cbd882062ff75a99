"""Context parallelism on gloo: 1, 2 and 3 spawned CPU processes, each holding its time shard of one
clip, against the same layers run on the whole clip in one process.

Each spawned group runs every case (one group per world size keeps the process start-up and the
gloo rendezvous to a few seconds); every collective runs under a 60 s gloo timeout, so a bug fails
instead of hanging. Forward outputs and input gradients are compared shard by shard, parameter
gradients after summing them over the group, all in float32 at 1e-5.
"""

from __future__ import annotations

import datetime
import itertools
import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from logo_attn import LOGOBlock, LocalGlobalAttention, WindowAttention3D, available_backends
from logo_attn.distributed import TimeSharding
from logo_attn.layers import Mlp
from logo_attn.swin import SwinBlock3D

# One pytest-xdist worker runs this module, so that each spawned group below starts once.
pytestmark = pytest.mark.xdist_group("context_parallel")

TOLERANCE = dict(rtol=1e-5, atol=1e-5)
BACKENDS = ["torch"] + (["cpu"] if available_backends()["cpu"].available else [])
DIM, HEADS, BATCH = 16, 2, 2

# (grid, window): F a multiple of ranks * f, of f only (uneven windows per rank), of neither (a
# trailing partial window); the spatial windows do not divide H, W either.
LOGO_GRIDS = [((12, 3, 4), (2, 2, 3)), ((10, 2, 3), (2, 2, 2)), ((11, 3, 2), (2, 3, 2))]
LOGO_CASES = [dict(grid=g, window=w, prefix=p, pool=pool, gather=gather, backend=b)
              for (g, w), p, pool, gather, b in [
                  (LOGO_GRIDS[0], 0, "avg", "input", "torch"), (LOGO_GRIDS[0], 1, "conv", "kv", "torch"),
                  (LOGO_GRIDS[1], 1, "avg", "kv", "torch"), (LOGO_GRIDS[1], 0, "conv", "input", "torch"),
                  (LOGO_GRIDS[2], 1, "avg", "input", "torch"), (LOGO_GRIDS[2], 1, "conv", "input", "torch"),
                  *[(LOGO_GRIDS[2], 1, "avg", "kv", "cpu"), (LOGO_GRIDS[0], 0, "conv", "input", "cpu")] * ("cpu" in BACKENDS),
              ]]
# Window attention with Swin's bias, f = 3: temporal shifts 0, 1 and f - 1 with spatial shifts;
# F = 14 leaves a partial window, zero_pad=True pads it as MONAI does (on the last rank only), and
# leaves the last rank a shifted domain of more than one window (where its local shift matters).
SWIN_CASES = [dict(grid=(14, 3, 4), window=(3, 2, 3), shift=(s, 1, sw), zero_pad=zp, backend=b)
              for s, sw, zp, b in [(0, 1, False, "torch"), (1, 1, False, "torch"), (2, 2, True, "torch"),
                                   (1, 0, True, "torch"), (2, 1, False, "torch"),
                                   *[(1, 1, True, "cpu"), (2, 2, False, "cpu")] * ("cpu" in BACKENDS)]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _excess(got: torch.Tensor, want: torch.Tensor) -> float:
    """How far `got` is outside assert_close's band around `want` (<= 0: within 1e-5)."""
    if got.shape != want.shape:
        return float("inf")
    got, want = got.detach(), want.detach()
    return float(((got - want).abs() - TOLERANCE["atol"] - TOLERANCE["rtol"] * want.abs()).max())


def _group_sum(t: torch.Tensor, group) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t, group=group)
    return t


def _compare(module: nn.Module, x: torch.Tensor, run_whole, run_shard, shard, group) -> dict:
    """Errors of the sharded run of `module` against the whole run: output, input gradient and the
    group-summed parameter gradients (each a max excess over the tolerance)."""
    g = torch.Generator().manual_seed(7)
    cotangent = torch.randn(x.shape, generator=g)
    whole = x.clone().requires_grad_()
    out = run_whole(whole)
    (out * cotangent).sum().backward()
    want = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    part = shard(x).clone().requires_grad_()
    out_part = run_shard(part)
    (out_part * shard(cotangent)).sum().backward()
    errors = {"out": _excess(out_part, shard(out.detach())), "dx": _excess(part.grad, shard(whole.grad))}
    errors["params"] = max(_excess(_group_sum(p.grad, group), want[n]) for n, p in module.named_parameters())
    return errors


def _logo_case(case: dict, group) -> dict:
    torch.manual_seed(0)
    block = LOGOBlock(DIM, HEADS, case["window"], pool=case["pool"], num_prefix_tokens=case["prefix"], qkv_bias=True,
                      backend=case["backend"])
    cp = TimeSharding(group, case["grid"], case["window"], gather=case["gather"])
    tokens = case["prefix"] + case["grid"][0] * case["grid"][1] * case["grid"][2]
    x = torch.randn(BATCH, tokens, DIM, generator=torch.Generator().manual_seed(3))
    return _compare(block, x, lambda t: block(t, case["grid"]), lambda t: block(t, case["grid"], cp=cp),
                    lambda t: cp.shard(t, prefix=case["prefix"]), group)


def _swin_case(case: dict, group) -> dict:
    torch.manual_seed(0)
    attn = WindowAttention3D(DIM, HEADS, case["window"], case["shift"], zero_pad=case["zero_pad"],
                             backend=case["backend"])
    cp = TimeSharding(group, case["grid"], case["window"])
    x = torch.randn(BATCH, *case["grid"], DIM, generator=torch.Generator().manual_seed(3))
    return _compare(attn, x, attn, lambda t: attn(t, cp=cp), cp.shard_frames, group)


class RecordingDropPath(nn.Module):
    """Stochastic depth (timm's drop_path) that keeps its last per-sample mask for the test."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.masks = p, []

    def forward(self, x):
        if not self.training:
            return x
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        self.masks.append(mask.flatten())
        return x * mask / (1 - self.p)


def _swin_block_case(group, rank: int) -> dict:
    """SwinBlock3D (checkpointed, as MONAI's use_checkpoint) in eval mode against one process, then in
    training mode with stochastic depth: the ranks, seeded differently, draw the same masks."""
    torch.manual_seed(0)
    grid, window = (9, 2, 3), (3, 2, 2)
    attn = WindowAttention3D(DIM, HEADS, window, (1, 1, 1))
    drop = RecordingDropPath(0.5)
    block = SwinBlock3D(nn.LayerNorm(DIM), attn, drop, nn.LayerNorm(DIM), Mlp(DIM, 2 * DIM), use_checkpoint=True)
    cp = TimeSharding(group, grid, window)
    x = torch.randn(BATCH, *grid, DIM, generator=torch.Generator().manual_seed(3))
    errors = _compare(block.eval(), x, block, lambda t: block(t, cp=cp), cp.shard_frames, group)
    block.train()
    torch.manual_seed(100 + rank)
    drop.masks.clear()
    block(cp.shard_frames(torch.randn(8, *grid, DIM)), cp=cp).sum().backward()
    masks = torch.cat(drop.masks)
    every = [torch.empty_like(masks) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, masks, group=group)
    errors["masks_disagree"] = float(sum(not torch.equal(m, masks) for m in every))
    errors["masks_trivial"] = float(masks.min() == masks.max())  # all kept or all dropped would prove nothing
    return errors


def _compiled_case(group) -> dict:
    """torch.compile(fullgraph=True) of the sharded layer (both collectives' Functions) against eager."""
    torch.manual_seed(0)
    grid, window = (6, 2, 2), (2, 2, 2)
    layer = LocalGlobalAttention(DIM, HEADS, window, num_prefix_tokens=1, backend="torch")
    attn = WindowAttention3D(DIM, HEADS, window, (1, 1, 1), backend="torch")
    cp = TimeSharding(group, grid, window, gather="kv")

    def step(x):
        y = layer(x, grid, cp=cp)
        return attn(y[:, cp.local_prefix(1):].unflatten(1, cp.local_grid()), cp=cp)

    x = cp.shard(torch.randn(BATCH, 1 + 24, DIM, generator=torch.Generator().manual_seed(3)), prefix=1)
    eager_in, compiled_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = step(eager_in)
    eager.square().sum().backward()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(compiled_in)
    compiled.square().sum().backward()
    return {"out": _excess(compiled, eager), "dx": _excess(compiled_in.grad, eager_in.grad)}


def _training_case(group) -> dict:
    """One SAM step of LOGOFormer (the training's train_step) with its clips' frames split over the
    group and DDP over it, against the step of one process on the whole clips."""
    from logo_attn import LOGOFormer
    from logo_attn.logoformer.config import TrainConfig
    from logo_attn.logoformer.distributed import Runtime
    from logo_attn.logoformer.loop import train_step
    from logo_attn.logoformer.losses import CompactLoss
    from logo_attn.logoformer.optim import SAM

    runtime = Runtime(TrainConfig(device="cpu", amp="off"))  # autocast off; the group is the test's
    clips = torch.randn(3, 7, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2])

    def step(cp):
        torch.manual_seed(0)
        # eval(): BatchNorm with running statistics, the same on a rank's frames as on the clip's
        model = LOGOFormer(num_classes=3, num_frames=7, img_size=16, embed_dim=24, depth=2, num_heads=2,
                           window=(2, 1, 2), backend="torch").eval()
        optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.5)
        if cp is None:
            train_step(model, clips, targets, CompactLoss(1.0), optimizer, runtime)
        else:
            ddp = nn.parallel.DistributedDataParallel(model, process_group=group)
            train_step(ddp, cp.shard_frames(clips), targets, CompactLoss(1.0), optimizer, runtime, cp)
        return model.state_dict()

    want = step(None)
    got = step(TimeSharding(group, (7, 1, 1), (2, 1, 2)))
    return {key: _excess(got[key].float(), want[key].float()) for key in want}


def _refusals(group, rank: int) -> dict:
    """Bad input fails with a clear error on every rank (a hang would hit the gloo timeout)."""
    found = {}

    def expect(name, match, make):
        try:
            make()
            found[name] = "no error"
        except ValueError as error:
            found[name] = "ok" if match in str(error) else f"wrong message: {error}"

    size = dist.get_world_size(group)
    expect("unaligned", "multiple of 2", lambda: TimeSharding(group, (4 * size, 2, 2), (2, 2, 2),
                                                                frame_counts=[3] + [4] * (size - 2) + [5]))
    expect("disagree", "every rank of the group must shard the same grid",
           lambda: TimeSharding(group, (4 * size + 2 * (rank == 1), 2, 2), (2, 2, 2)))
    expect("one_rank_refuses", "refused its arguments" if rank != 1 else "at least one whole window",
           lambda: TimeSharding(group, (2 * size - 2 * (rank == 1), 2, 2), (2, 2, 2)))
    cp = TimeSharding(group, (4 * size, 2, 2), (2, 2, 2))
    layer = LocalGlobalAttention(DIM, HEADS, (2, 2, 2))
    expect("whole_clip_passed", "this rank's shard", lambda: layer(torch.randn(1, 16 * size, DIM), (4 * size, 2, 2), cp=cp))
    expect("other_grid", "is not the grid", lambda: layer(torch.randn(1, 16, DIM), (4 * size, 1, 4), cp=cp))
    coarse = LocalGlobalAttention(DIM, HEADS, (4, 2, 2))
    uneven = TimeSharding(group, (2 * size + 2, 2, 2), (2, 2, 2), frame_counts=[2] * (size - 1) + [4])
    expect("window_across_cut", "not all multiples of this layer's temporal window 4",
           lambda: coarse(torch.randn(1, 4 * uneven.local_frames(), DIM), uneven.grid, cp=uneven))
    return found


def _unshard_case(group) -> dict:
    """unshard(shard(x)) is x on every rank; its backward is the adjoint: every rank's loss on the whole
    tensor sends its gradient to the owner, so a shard's gradient is the group's sum (R times c here)."""
    from torch.distributed.device_mesh import init_device_mesh

    errors = {}
    size = dist.get_world_size(group)
    # the group three ways: a ProcessGroup, a 1-D DeviceMesh, the context dim of a data x context mesh
    meshes = [(group, None), (init_device_mesh("cpu", (size,)), None),
              (init_device_mesh("cpu", (1, size), mesh_dim_names=("data", "context")), "context")]
    for prefix, (mesh, mesh_dim) in itertools.product((0, 1), meshes):
        cp = TimeSharding(mesh, (7, 2, 3), (2, 2, 2), mesh_dim=mesh_dim)
        assert cp.size == size
        x = torch.randn(BATCH, prefix + 42, DIM, generator=torch.Generator().manual_seed(prefix))
        c = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
        mine = cp.shard(x, prefix).clone().requires_grad_()
        whole = cp.unshard(mine, prefix)
        (whole * c).sum().backward()
        errors[f"forward_prefix{prefix}_{type(mesh).__name__}{mesh_dim or ''}"] = _excess(whole, x)
        errors[f"backward_prefix{prefix}_{type(mesh).__name__}{mesh_dim or ''}"] = _excess(
            mine.grad, cp.size * cp.shard(c, prefix))
    return errors


def _one_rank_case(rank: int) -> dict:
    """A group of one rank: the one-process path, the sharding's shard/unshard the identity."""
    singles = [dist.new_group([r]) for r in range(dist.get_world_size())]  # collective: every rank makes every group
    group = singles[rank]
    torch.manual_seed(0)
    layer = LocalGlobalAttention(DIM, HEADS, (2, 2, 2), num_prefix_tokens=1)
    cp = TimeSharding(group, (5, 2, 3), (2, 2, 2))
    x = torch.randn(BATCH, 31, DIM)
    y = layer(x, (5, 2, 3), cp=cp)
    return {"out": _excess(y, layer(x, (5, 2, 3))), "identity": _excess(cp.unshard(cp.shard(x, 1), 1), x),
            "sharded": float(cp.sharded)}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    group = dist.group.WORLD
    results = {}

    def record(name, run):
        try:
            results[name] = run()
        except Exception:  # reported by the test, with the rank's traceback
            results[name] = {"exception": traceback.format_exc()}

    for i, case in enumerate(LOGO_CASES):
        record(f"logo{i}", lambda: _logo_case(case, group))
    for i, case in enumerate(SWIN_CASES):
        record(f"swin{i}", lambda: _swin_case(case, group))
    record("swin_block", lambda: _swin_block_case(group, rank))
    record("training", lambda: _training_case(group))
    record("unshard", lambda: _unshard_case(group))
    record("refusals", lambda: _refusals(group, rank))
    record("one_rank", lambda: _one_rank_case(rank))
    if world == 2:
        record("compiled", lambda: _compiled_case(group))
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"{w}ranks")
def results(request, tmp_path_factory):
    world = request.param
    out = str(tmp_path_factory.mktemp(f"cp{world}") / "results")
    mp.spawn(_worker, args=(world, _free_port(), out), nprocs=world, join=True)
    return world, [torch.load(f"{out}.{r}") for r in range(world)]


def _errors(results, name):
    world, per_rank = results
    for rank, found in enumerate(per_rank):
        assert "exception" not in found[name], f"rank {rank}:\n{found[name]['exception']}"
    return [found[name] for found in per_rank]


def _assert_within(results, name):
    for rank, errors in enumerate(_errors(results, name)):
        for what, excess in errors.items():
            assert excess <= 0, f"rank {rank} of {results[0]}: {what} off by {excess:.3g} beyond rtol=atol=1e-5"


@pytest.mark.parametrize("index", range(len(LOGO_CASES)), ids=lambda i: "{grid}-P{prefix}-{pool}-{gather}-{backend}".format(**LOGO_CASES[i]))
def test_logo_block_equals_one_process(results, index):
    _assert_within(results, f"logo{index}")


@pytest.mark.parametrize("index", range(len(SWIN_CASES)), ids=lambda i: "shift{shift}-pad{zero_pad}-{backend}".format(**SWIN_CASES[i]))
def test_window_attention_equals_one_process(results, index):
    _assert_within(results, f"swin{index}")


def test_swin_block_and_stochastic_depth(results):
    _assert_within(results, "swin_block")


def test_unshard_inverts_shard(results):
    _assert_within(results, "unshard")


def test_training_step_equals_one_process(results):
    _assert_within(results, "training")


@pytest.mark.parametrize("results", [2], indirect=True, ids=["2ranks"])  # compiling twice would double its time
def test_compiled_sharded_layer_equals_eager(results):
    _assert_within(results, "compiled")


def test_group_of_one_rank_is_the_one_process_path(results):
    for errors in _errors(results, "one_rank"):
        assert errors.pop("sharded") == 0
        assert all(e <= 0 for e in errors.values()), errors


def test_bad_input_fails_on_every_rank(results):
    for rank, found in enumerate(_errors(results, "refusals")):
        assert all(v == "ok" for v in found.values()), f"rank {rank}: {found}"


TRAIN_ARGS = ["--dataset", "synthetic", "--synthetic-clips", "8", "4", "4", "--epochs", "1", "--batch-size", "4",
              "--image-size", "16", "--embed-dim", "24", "--depth", "1", "--num-heads", "2", "--no-progress"]


def test_torchrun_context_parallel_training(tmp_path):
    # The CLI under torchrun: 2 CPU processes forming one clip group of 2 ranks.
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "logo_attn.train", "--context-parallel", "2", *TRAIN_ARGS,
               "--out-dir", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "context parallel: 1 clip group(s) of 2 ranks, frames [(0, 4), (4, 8)]" in result.stderr
    assert "BatchNorm per rank" in result.stderr
    assert '"clips": 4' in (tmp_path / "run" / "test_metrics.json").read_text()


def test_context_parallel_flag_refusals(capsys, tmp_path):
    from logo_attn.logoformer.train import main

    for extra, message in ((["--context-parallel", "2"], "context_parallel 2 must divide the 1 process(es)"),
                           (["--context-parallel", "2", "--attention", "full"], "needs attention 'logo'"),
                           (["--context-parallel", "0"], "context_parallel must be >= 1")):
        with pytest.raises(SystemExit) as exit_info:
            main([*TRAIN_ARGS, *extra, "--out-dir", str(tmp_path)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
