"""DDP: two gloo processes on CPU give the same SAM step as one process on the whole batch."""

import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from logo_attn.logoformer.losses import CompactLoss
from logo_attn.logoformer.optim import SAM
from logo_attn.logoformer.config import TrainConfig
from logo_attn.logoformer.distributed import Runtime
from logo_attn.logoformer.loop import train_step

MODEL = dict(num_classes=4, num_frames=4, img_size=16, embed_dim=24, depth=1, num_heads=2, window=(2, 1, 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    """Model, SAM (plain SGD, so the update is exactly -lr * second-pass gradient) and a fixed batch."""
    from logo_attn import LOGOFormer

    torch.manual_seed(0)
    # eval(): BatchNorm uses running statistics, so each process's half batch is normalised like the
    # whole batch; gradients are still computed. (Training-mode BN would normalise per process.)
    model = LOGOFormer(**MODEL, backend="torch").eval()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.5)
    g = torch.Generator().manual_seed(1)
    clips, targets = torch.randn(6, 4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3, 1, 2])
    return model, optimizer, clips, targets


def _single_process_step() -> dict:
    model, optimizer, clips, targets = _setup()
    runtime = Runtime(TrainConfig(device="cpu", amp="off"))
    train_step(model, clips, targets, CompactLoss(1.0), optimizer, runtime)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    runtime = Runtime(TrainConfig(device="cpu", amp="off"))  # joins the gloo group from the env
    mine = slice(3 * rank, 3 * rank + 3)
    criterion = CompactLoss(1.0)
    results = {}
    for first_pass_synced in (True, False):
        model, optimizer, clips, targets = _setup()
        ddp = nn.parallel.DistributedDataParallel(model)
        if first_pass_synced:
            train_step(ddp, clips[mine], targets[mine], criterion, optimizer, runtime)
        else:  # the tempting shortcut: no all-reduce in the first pass, so each rank perturbs on its own
            with ddp.no_sync():
                criterion(ddp(clips[mine]), targets[mine]).backward()
            optimizer.first_step(zero_grad=True)
            criterion(ddp(clips[mine]), targets[mine]).backward()
            optimizer.second_step(zero_grad=True)
        results[first_pass_synced] = model.state_dict()
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    runtime.close()


def test_sam_step_under_ddp_equals_one_process(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    results = torch.load(out)
    single = _single_process_step()
    initial = _setup()[0].state_dict()
    moved = 0
    for key, value in single.items():
        torch.testing.assert_close(results[True][key], value, rtol=1e-5, atol=1e-6, msg=key)
        moved += not torch.equal(value, initial[key])
    assert moved > 10  # the step really changed the weights

    # Negative control: skipping the first all-reduce gives a different step, so the check above has teeth.
    unsynced = results[False]
    assert max((unsynced[k] - single[k]).abs().max().item() for k in single if single[k].is_floating_point()) > 1e-4


def test_torchrun_training_end_to_end(tmp_path):
    # The CLI under torchrun with 2 CPU processes: data sharding, gathered metrics, rank-0 checkpoints.
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "logo_attn.train", "--dataset", "synthetic", "--synthetic-clips", "16", "8", "8",
               "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--embed-dim", "24", "--depth", "1",
               "--num-heads", "2", "--no-progress", "--out-dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    for name in ("best.pt", "last.pt", "log.csv", "test_metrics.json", "confusion_matrix.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert '"clips": 8' in (tmp_path / "run" / "test_metrics.json").read_text()  # every test clip counted once
