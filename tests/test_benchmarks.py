"""Smoke tests of benchmarks/: the peers compute what the ops compute, counted FLOPs equal the analytic
ones on real tensors, the timing helpers measure what they say, the scripts run on tiny sweeps, and
the pytest-benchmark suite runs from the repository root."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

import logo_attn  # noqa: E402
from benchmarks import bench_ops, flops_vs_timesformer, peers, schemes  # noqa: E402
from benchmarks.counting import count_flops  # noqa: E402
from benchmarks.timing import Timing, measure_many, paired_ratio, peak_memory, time_cpu_interleaved  # noqa: E402
from logo_attn import backends, flops  # noqa: E402
from logo_attn.geometry import NO_SHIFT, attended_pairs, bias_table_shape, clip_shift, clip_window  # noqa: E402

# (grid, window): divisible, border windows on every axis, window larger than the grid
GRIDS = [((4, 6, 6), (2, 3, 3)), ((3, 5, 7), (2, 3, 3)), ((2, 3, 2), (4, 7, 7))]


def close(actual, expected, tol=1e-10):
    return float((actual.detach().double() - expected.detach()).norm() / expected.detach().norm()) < tol


def reference_local(q, k, v, grid, window):
    return logo_attn.local_attention(q, k, v, grid, window, backend="torch")


@pytest.mark.parametrize("grid,window", GRIDS)
@pytest.mark.parametrize("peer", [peers.partition_sdpa, peers.masked_full_sdpa])
def test_local_peers_equal_the_op(peer, grid, window):
    clipped = [min(w, g) for w, g in zip(window, grid)]
    qkv = torch.randn(2, math.prod(grid), 3, 2, 16, dtype=torch.float64, requires_grad=True)
    expected = reference_local(*qkv.unbind(2), grid, clipped)
    got = peer(*qkv.unbind(2), grid, clipped)
    assert got.shape == expected.shape and got.is_contiguous()
    assert close(got, expected)
    dout = torch.randn_like(expected)
    (want,) = torch.autograd.grad(expected, qkv, dout)
    (grad,) = torch.autograd.grad(got, qkv, dout)
    assert close(grad, want)


@pytest.mark.parametrize("swin,grid,window", [(False, (3, 5, 7), (2, 3, 3)), (True, (3, 5, 7), (2, 3, 3)),
                                              (True, (1, 6, 7), (1, 3, 3))], ids=["plain", "shift+bias", "2d+bias"])
def test_flex_peer_equals_the_op(swin, grid, window):
    """Compiled FlexAttention with the cached block mask (shifted windows and the bias score_mod for
    Swin, on grids the windows do not divide; a 2-D grid, whose one-frame window Inductor's CPU
    template once failed to lower); forward only on CPU (it has no CPU backward)."""
    shift = tuple(w // 2 for w in window) if swin else NO_SHIFT  # Swin's shift: 0 on a one-frame axis
    table = torch.randn(2, *bias_table_shape(window)) if swin else None
    qkv = torch.randn(1, math.prod(grid), 3, 2, 16)
    flex = peers.FlexLocalAttention(grid, window, torch.device("cpu"), shift, table)
    assert not flex.has_backward
    expected = logo_attn.local_attention(*qkv.double().unbind(2), grid, window, shift=shift,
                                         bias=None if table is None else table.double(), backend="torch")
    assert close(flex(*qkv.unbind(2)), expected, tol=1e-5)


def swin_operands(grid, window, heads=2, head_dim=8):
    """float64 qkv (B=2) and a bias table for `window` (unclipped), both requiring grad; the window
    clipped to the grid and Swin's shift (window // 2 where the window does not cover the axis)."""
    qkv = torch.randn(2, math.prod(grid), 3, heads, head_dim, dtype=torch.float64, requires_grad=True)
    table = torch.randn(heads, *bias_table_shape(window), dtype=torch.float64, requires_grad=True)
    return qkv, table, clip_window(grid, window), clip_shift(grid, window, [w // 2 for w in window])


@pytest.mark.parametrize("grid,window", GRIDS + [((8, 6, 5), (3, 4, 4))])
@pytest.mark.parametrize("shifted", [False, True], ids=["W-MSA", "SW-MSA"])
def test_monai_eager_peer_equals_the_op(grid, window, shifted):
    """Output and the q/k/v and table gradients, on divisible grids, grids with border windows (whose
    padding the peer masks) and windows clipped to the grid."""
    qkv, table, clipped, shift = swin_operands(grid, window)
    shift = shift if shifted else NO_SHIFT
    expected = logo_attn.local_attention(*qkv.unbind(2), grid, window, shift=shift, bias=table, backend="torch")
    got = peers.monai_eager_window_attention(*qkv.unbind(2), grid, clipped, shift, table)
    assert got.shape == expected.shape and got.is_contiguous()
    assert close(got, expected)
    dout = torch.randn_like(expected)
    grads, wants = (torch.autograd.grad(out, (qkv, table), dout) for out in (got, expected))
    for grad, want in zip(grads, wants):
        assert close(grad, want)


@pytest.mark.parametrize("grid,window,shift", [
    ((4, 6, 6), (2, 3, 3), (0, 0, 0)),  # W-MSA
    ((4, 6, 6), (2, 3, 3), (1, 1, 1)),  # SW-MSA
    ((2, 6, 9), (2, 3, 3), (1, 1, 1)),  # the window covers F: MONAI drops that axis's shift, as the op does
])
def test_monai_eager_peer_is_monais_window_attention(grid, window, shift):
    """The peer is what MONAI computes: its SwinTransformerBlock's attention part (forward_part1 with
    the norm removed: pad, roll, window partition, WindowAttention with the relative-position bias and
    compute_mask's mask, reverse, roll back) equals the peer on the same qkv projection, with the
    table gradient, on grids the window divides (elsewhere MONAI attends the zero padding)."""
    monai_swin = pytest.importorskip("monai.networks.nets.swin_unetr",
                                     reason="MONAI is not installed (pip install monai)")
    heads, head_dim = 2, 8
    dim = heads * head_dim
    block = monai_swin.SwinTransformerBlock(dim, heads, window, shift, qkv_bias=True).double()
    block.norm1 = torch.nn.Identity()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()  # MONAI's init (std 0.02) would hide a wrong index
    use_window, use_shift = monai_swin.get_window_size(grid, window, shift)
    mask = monai_swin.compute_mask(list(grid), use_window, use_shift, "cpu")
    x = torch.randn(2, *grid, dim, dtype=torch.float64, requires_grad=True)
    expected = block.forward_part1(x, mask)

    table_param = block.attn.relative_position_bias_table  # (P, heads)
    table = table_param.t().reshape(heads, *bias_table_shape(window))
    qkv = block.attn.qkv(x.reshape(2, -1, dim)).unflatten(-1, (3, heads, head_dim))
    out = peers.monai_eager_window_attention(*qkv.unbind(2), grid, use_window, use_shift, table)
    got = block.attn.proj(out.flatten(2)).reshape(expected.shape)
    assert close(got, expected)
    dout = torch.randn_like(expected)
    for grad, want in zip(torch.autograd.grad(got, (x, table_param), dout),
                          torch.autograd.grad(expected, (x, table_param), dout)):
        assert close(grad, want)


def test_bench_swaps_times_the_same_attention_half_of_monais_block_and_the_swapped_one():
    """bench_swaps' MONAI stage rows time `MonaiAttentionPart`: MONAI's forward_part1 with the region
    mask the wrapper builds, against the swapped block's attention_part. On a shifted block the two
    compute one function (float64, output and input gradient), so the rows compare like with like."""
    monai_swin = pytest.importorskip("monai.networks.nets.swin_unetr",
                                     reason="MONAI is not installed (pip install monai)")
    from benchmarks.bench_swaps import MonaiAttentionPart
    from logo_attn.swin import SwinBlock3D

    block = monai_swin.SwinTransformerBlock(16, 2, (2, 4, 4), (1, 2, 2), qkv_bias=True).double().eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
    parts = [MonaiAttentionPart(block), MonaiAttentionPart(SwinBlock3D.from_monai(block))]
    x = torch.randn(1, 4, 8, 8, 16, dtype=torch.float64, requires_grad=True)
    (expected, got) = [part(x) for part in parts]
    assert parts[0].masks and close(got, expected)
    dout = torch.randn_like(expected)
    assert close(torch.autograd.grad(got, x, dout)[0], torch.autograd.grad(expected, x, dout)[0])


def test_swin_rows_time_the_op_on_every_backend_that_runs_here():
    """`--ops swin` times the op on each backend the dispatcher accepts for these inputs (the C++
    kernels on CPU, the reference), first, then its peers."""
    args = bench_ops.parse_args(["--device", "cpu", "--ops", "swin", "--swin-shapes", "4x6x6:2x3x3:2x8",
                                 "--swin-variants", "SW-MSA", "--peers", "monai_eager"])
    (case,) = bench_ops.cases(args)
    runnable = [name for name in ("cpu", "torch") if backends.why_not(name, "cpu", torch.float32, 8) is None]
    assert [impl.name for impl in case.impls] == [f"op[{name}]" for name in runnable] + ["monai eager"]


def test_global_peer_equals_the_op():
    q = torch.randn(2, 30, 3, 16, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(2, 5, 2, 3, 16, dtype=torch.float64, requires_grad=True)
    expected = logo_attn.global_attention(q, *kv.unbind(2), backend="torch")
    got = peers.sdpa_global(q, *kv.unbind(2))
    assert close(got, expected)
    dout = torch.randn_like(expected)
    for g, w in zip(torch.autograd.grad(got, (q, kv), dout), torch.autograd.grad(expected, (q, kv), dout)):
        assert close(g, w)


@pytest.mark.parametrize("grid,window", GRIDS)
@pytest.mark.parametrize("peer", [peers.avg_pool3d_pool, peers.partition_mean, peers.view_mean])
def test_pool_peers_equal_the_op(peer, grid, window):
    clipped = [min(w, g) for w, g in zip(window, grid)]
    x = torch.randn(2, math.prod(grid), 24, dtype=torch.float64)
    if peer is peers.view_mean and any(g % w for g, w in zip(grid, clipped)):
        with pytest.raises(ValueError, match="divides the grid"):
            peer(x, grid, clipped)
        return
    assert close(peer(x, grid, clipped), logo_attn.window_pool(x, grid, clipped, backend="torch"))


@pytest.mark.parametrize("prefix", [0, 1])
def test_sdpa_layer_equals_the_layer(prefix):
    grid = (3, 5, 7)
    layer = logo_attn.LocalGlobalAttention(32, 4, (2, 3, 3), num_prefix_tokens=prefix, backend="torch").double()
    user = peers.SDPALocalGlobalAttention(32, 4, (2, 3, 3), num_prefix_tokens=prefix).double()
    user.load_state_dict(layer.state_dict())
    x = torch.randn(2, prefix + math.prod(grid), 32, dtype=torch.float64, requires_grad=True)
    expected, got = layer(x, grid), user(x, grid)
    assert close(got, expected)
    dout = torch.randn_like(expected)
    want = torch.autograd.grad(expected, [x, *layer.parameters()], dout)
    grads = torch.autograd.grad(got, [x, *user.parameters()], dout)
    assert all(close(g, w) for g, w in zip(grads, want))


@pytest.mark.parametrize("prefix", [0, 2])
@pytest.mark.parametrize("scheme", flops.SCHEMES)
def test_counted_flops_on_real_tensors_equal_analytic(scheme, prefix):
    """FlopCounterMode on real CPU tensors (SDPA's math path, which it counts) against logo_attn.flops."""
    grid, window, dim = (3, 5, 7), (2, 3, 3), 24
    layer = schemes.build(scheme, dim, 3, window, prefix, backend="torch")
    x = torch.randn(2, prefix + math.prod(grid), dim)
    with sdpa_kernel(SDPBackend.MATH):
        counted = count_flops(lambda: layer(x, grid))
    pairs = flops.attention_pairs(scheme, grid, window, prefix)
    assert counted["attention"] == 2 * flops.attention_macs(pairs, dim, batch=2)
    assert counted["projection"] == 2 * 2 * schemes.projection_macs(scheme, grid, window, dim, prefix)
    assert counted["other"] == 0


def test_schemes_are_the_layers_the_model_trains():
    from logo_attn.logoformer.model import LOGOFormer

    for scheme, layer in (("full", logo_attn.FullAttention), ("divided", logo_attn.DividedAttention),
                          ("logo", logo_attn.LocalGlobalAttention)):
        assert type(schemes.build(scheme, 16, 2, (2, 2, 2))) is layer
        model = LOGOFormer(num_frames=2, img_size=32, embed_dim=16, depth=1, num_heads=2, window=(2, 2, 2),
                           attention=scheme)
        assert type(model.blocks[0].attn) is layer


def test_timing_quantiles_are_ordered():
    (timing,) = measure_many([lambda: torch.randn(64, 64) @ torch.randn(64, 64)], torch.device("cpu"), threads=1,
                             min_run_time=0.02, min_samples=5)
    assert isinstance(timing, Timing) and timing.samples >= 5
    assert 0 < timing.p20 <= timing.median <= timing.p80


def test_interleaved_timing_gives_paired_ratios():
    a, b = time_cpu_interleaved([lambda: None, lambda: sum(range(100))], threads=1, min_run_time=0.01, min_samples=4)
    assert a.samples == b.samples >= 4 and len(a.values) == len(b.values) == a.samples
    # rounds where the machine was slow for both cancel out: the median of per-round ratios
    slow_round = Timing(2.0, 1.0, 4.0, 3, values=(1.0, 4.0, 2.0))
    base = Timing(1.0, 0.5, 2.0, 3, values=(0.5, 2.0, 1.0))
    assert paired_ratio(slow_round, base) == 2.0
    assert paired_ratio(Timing(3.0, 3.0, 3.0, 1), Timing(2.0, 2.0, 2.0, 1)) == 1.5  # no paired samples


def test_cpu_peak_memory_sees_a_temporary():
    size = 4 << 20  # 4 MiB of float32, freed before fn returns

    def fn():
        big = torch.ones(size // 4)
        return float(big.sum())

    peak = peak_memory(fn, torch.device("cpu"))
    assert size <= peak < 2 * size


def test_bench_ops_runs_and_checks_every_row(tmp_path):
    out = tmp_path / "ops"
    rows = bench_ops.main([
        "--device", "cpu", "--backend", "torch", "--dtype", "float32", "--batch", "1", "--grid", "3x5x4",
        "--window", "2x3x3", "--heads", "2", "--head-dim", "16", "--global-keys", "4",
        "--peers", "partition_sdpa", "masked_full", "sdpa", "avg_pool3d", "partition_mean", "sdpa_layer", "monai_eager",
        "--swin-shapes", "4x6x6:2x3x3:2x8", "--min-run-time", "0.005", "--threads", "1", "--out", str(out),
    ])
    assert {r["op"] for r in rows} == {"local_attention", "global_attention", "window_pool", "LocalGlobalAttention",
                                       "local_attention+bias"}
    swin = [r for r in rows if r["op"] == "local_attention+bias"]
    assert {(r["impl"], tuple(r["shift"])) for r in swin} == {
        (impl, shift) for impl in ("op[torch]", "monai eager") for shift in ((0, 0, 0), (1, 1, 1))}
    shifted = next(r for r in swin if r["mode"] == "fwd" and r["impl"] == "op[torch]" and any(r["shift"]))
    pairs = attended_pairs((4, 6, 6), (2, 3, 3), (1, 1, 1))
    assert shifted["tflops"] == pytest.approx(flops.attention_flops(pairs, 1, 2, 8) / shifted["median_ms"] / 1e9)
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows if r["status"] != "ok"]
    assert all(r["check_rel_err"] < 1e-4 and r["median_ms"] > 0 and r["peak_mib"] >= 0 for r in rows)
    local_fwd = next(r for r in rows if r["op"] == "local_attention" and r["mode"] == "fwd")
    pairs = attended_pairs((3, 5, 4), (2, 3, 3))
    assert local_fwd["tflops"] == pytest.approx(flops.attention_flops(pairs, 1, 2, 16) / local_fwd["median_ms"] / 1e9)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["environment"]["torch"] == torch.__version__ and len(saved["rows"]) == len(rows)
    # the CPU's limits were measured in this run, and every fp32 row with FLOPs or bytes has its fraction
    assert saved["environment"]["roofline"].startswith("measured in this run, 1 threads: torch.mm fp32 ")
    assert all(r["roofline_pct"] > 0 for r in rows if r["tflops"] or r["gbps"])
    assert out.with_suffix(".csv").read_text().count("\n") == len(rows) + 1


def test_bench_ops_compares_the_half_product_with_the_fp32_tiles(tmp_path):
    """Where bf16 local attention's products run on a HalfGemm (AMX; here the `brgemm` test mode), the
    local rows add the same kernels on the fp32 tiles, each checked against the float64 reference."""
    try:
        from logo_attn import _C  # noqa: F401
    except ImportError:
        pytest.skip("the C++ extension is not built here: no CPU kernels to compare")
    out = tmp_path / "ops"
    with bench_ops.cpu_half_gemm("brgemm"):
        rows = bench_ops.main([
            "--device", "cpu", "--backend", "cpu", "--ops", "local", "--dtype", "bfloat16", "--batch", "1",
            "--grid", "3x5x4", "--window", "2x3x3", "--heads", "2", "--head-dim", "16", "--peers", "partition_sdpa",
            "--min-run-time", "0.005", "--threads", "1", "--out", str(out),
        ])
        q, k, v = (torch.randn(1, 60, 2, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        tiles = bench_ops.LocalOnFp32Tiles.apply(q, k, v, [3, 5, 4], [2, 3, 3])
        tile_grads = torch.autograd.grad(tiles, (q, k, v), torch.ones_like(tiles))
    assert {r["impl"] for r in rows} == {"op[cpu]", "op[cpu] fp32 tiles", "partition+sdpa"}
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows if r["status"] != "ok"]
    assert json.loads(out.with_suffix(".json").read_text())["environment"]["cpu_kernels"]["bf16_gemm"] == "brgemm"
    with bench_ops.cpu_half_gemm("off"):  # the variant is exactly the fp32 tiles' result
        plain = logo_attn.local_attention(q, k, v, (3, 5, 4), (2, 3, 3), backend="cpu")
        plain_grads = torch.autograd.grad(plain, (q, k, v), torch.ones_like(plain))
    assert all(torch.equal(a, b) for a, b in zip((tiles, *tile_grads), (plain, *plain_grads)))


def test_bench_ops_reports_a_wrong_peer_instead_of_timing_it(monkeypatch, tmp_path):
    monkeypatch.setattr(peers, "sdpa_global", lambda q, k, v: peers.F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2).contiguous() * 1.01)
    rows = bench_ops.main([
        "--device", "cpu", "--backend", "torch", "--ops", "global", "--modes", "fwd", "--batch", "1",
        "--grid", "2x3x3", "--heads", "2", "--head-dim", "16", "--peers", "sdpa", "--min-run-time", "0.005",
        "--threads", "1", "--out", str(tmp_path / "ops"),
    ])  # one pooled window: a single key, whose q and k gradients are exactly zero
    op, wrong = (next(r for r in rows if r["impl"] == name) for name in ("op[torch]", "sdpa"))
    assert op["status"] == "ok" and op["median_ms"] > 0
    assert wrong["status"].startswith("error: AssertionError") and wrong["median_ms"] is None


def test_flops_vs_timesformer_tiny_sweep(tmp_path):
    out = tmp_path / "sweep"
    result = flops_vs_timesformer.main([
        "--frames", "2", "4", "--sizes", "3", "5", "--windows", "2x3x3", "--dim", "16", "--heads", "2",
        "--prefix", "1", "--min-run-time", "0.005", "--threads", "1", "--out", str(out),
    ])
    rows, summary = result["rows"], result["summary"]
    assert not summary["mismatches"]
    assert all(r["counted_equals_analytic"] for r in rows)
    assert all(r["status"] == "ok" and r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in rows)
    full_space = next(s for s in summary["slopes"] if s["family"] == "space" and s["scheme"] == "full")
    assert full_space["cost_slope"] == pytest.approx(2.0, abs=0.05)  # (N + 1)^2 with one prefix token
    for path in (out.with_suffix(".json"), out.with_suffix(".csv"), tmp_path / "sweep_cost.png",
                 tmp_path / "sweep_time.png"):
        assert path.stat().st_size > 0


def test_crossovers_are_real_changes():
    family = flops_vs_timesformer.FAMILIES[0]  # F = 16, H = W growing
    found = flops_vs_timesformer.crossovers(family, (2, 7, 7), 0, 64)

    def relation(size):
        grid = family.grid(size)
        window = [min(w, g) for w, g in zip((2, 7, 7), grid)]
        logo, divided = flops.attention_pairs("logo", grid, window), flops.attention_pairs("divided", grid)
        return "cheaper" if logo < divided else "equal" if logo == divided else "dearer"

    assert found[0]["grid"] == "16x1x1" and found[0]["logo_is"] == relation(1)
    assert [c["logo_is"] for c in found][-1] == "cheaper"  # 16x10x10 onwards: fewer pairs than divided
    for change in found[1:]:
        size = int(change["grid"].split("x")[1])
        assert relation(size) == change["logo_is"] != relation(size - 1)
    assert "cheaper from 16x10x10 (N=1600)" in flops_vs_timesformer.describe_crossovers(found)


def test_bench_model_table_and_training_step(tmp_path):
    from benchmarks import bench_model

    result = bench_model.main([
        "--device", "cpu", "--frames", "2", "--sizes", "32", "--embed-dim", "32", "--depth", "1", "--heads", "2",
        "--batch", "1", "--min-run-time", "0.01", "--threads", "1", "--out", str(tmp_path / "model"),
    ])
    costs, steps = result["costs"], result["steps"]
    assert {c["attention"] for c in costs} == {"logo", "full", "divided", "spatial"}
    for cost in costs:
        assert cost["attention_gmacs"] == pytest.approx(cost["analytic_attention_gmacs"], rel=1e-12)
        assert cost["gmacs"] == pytest.approx(cost["trunk_gmacs"] + cost["linear_gmacs"] + cost["attention_gmacs"])
    assert [s["attention"] for s in steps] == ["logo", "full", "divided", "spatial"]
    assert all(s["step_ms"] > 0 and s["peak_mib"] > 0 and s["samples"] >= 3 for s in steps)
    assert steps[0]["t_over_t_logo"] == 1.0


def test_paper_numbers_only_for_the_papers_input():
    from benchmarks import bench_model

    assert bench_model.paper_row("logo", 16, 112) == ("LOGO-Former", 10.27)
    assert bench_model.paper_row("divided", 16, 112)[1] == 25.16
    assert bench_model.paper_row("logo", 16, 224) == (None, None)


# bench_ops.py options of the smoke run: tiny shapes, every peer but FlexAttention, whose CPU
# compilation alone takes longer than this test's budget (test_flex_peer_equals_the_op covers it).
SMOKE_OPS_ARGS = (
    "--device cpu --batch 1 --grid 3x5x4 --window 2x3x3 --heads 2 --head-dim 16 --global-keys 4 --threads 1 "
    "--swin-shapes 4x6x6:2x3x3:2x8 --peers partition_sdpa masked_full sdpa avg_pool3d partition_mean sdpa_layer "
    "monai_eager"
)


def test_pytest_benchmark_suite_runs_every_case_once():
    """`pytest benchmarks --benchmark-disable` (CI's smoke run): every callable of every op, mode and
    peer runs once and passes its float64 check, in one group per op, mode and shape."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}  # not an xdist worker
    command = [sys.executable, "-m", "pytest", "benchmarks", "--benchmark-disable", "-v", "-p", "no:cacheprovider",
               f"--bench-ops-args={SMOKE_OPS_ARGS}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.findall(r"::test_op\[(.*)\] PASSED", done.stdout)
    args = bench_ops.parse_args(SMOKE_OPS_ARGS.split())
    expected = {f"{case.label(mode)} {impl.name}".replace(" ", "-") for case in bench_ops.cases(args)
                for mode in args.modes for impl in case.impls}
    assert set(passed) == expected and len(passed) == len(expected)
    assert {"local-fwd+bwd-B1-3x5x4-w2x3x3-2x16-fp32-op[torch]",  # the group names the README shows
            "swin-SW-MSA-fwd+bwd-B1-4x6x6-w2x3x3-s1x1x1-2x8-fp32-monai-eager"} <= expected


@pytest.mark.parametrize("script,args,message", [
    ("bench_ops.py", ["--grid", "16x7"], "--grid: expected three positive ints joined by x"),
    ("bench_ops.py", ["--batch", "0"], "--batch: expected a positive int"),
    ("flops_vs_timesformer.py", ["--windows", "2xax7"], "--windows: expected three positive ints"),
    ("bench_model.py", ["--heads", "3"], "--embed-dim 256 must be divisible by --heads 3"),
    ("bench_swaps.py", ["--clients", "monai-swin_unetr", "--monai-size", "32"],
     "--monai-size must be a multiple of 32, at least 64"),
])
def test_command_line_mistakes_exit_2_with_one_error_line(script, args, message):
    import subprocess

    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


# The GPU preset with its shapes shrunk, everything else (bf16, every op, peer and mode) as it is.
TINY_GPU_PRESET = ["--preset", "gpu", "--device", "cpu", "--batch", "1", "--grid", "3x5x4", "--heads", "2",
                   "--head-dim", "16", "--global-keys", "8", "--swin-shapes", "4x6x6:2x3x3:2x8", "--swin-batch", "1",
                   "--threads", "1", "--min-run-time", "0.001"]


def test_every_row_of_the_gpu_preset_runs_on_cpu_in_bf16(tmp_path):
    """Before GPU time is spent: every case of `--preset gpu` (bf16) passes its float64 check (the
    tests' low-precision rule) and is timed on CPU, but for what PyTorch has no CPU kernel for, each
    row saying so."""
    rows = bench_ops.main([*TINY_GPU_PRESET, "--out", str(tmp_path / "gpu_preset")])
    args = bench_ops.parse_args(TINY_GPU_PRESET)
    assert args.dtype == "bfloat16" and set(args.ops) == set(bench_ops.OPS) and set(args.modes) == set(bench_ops.MODES)
    expected = {(case.op, impl.name, tuple(case.shape["grid"]), case.shape.get("keys"), mode)
                for case in bench_ops.cases(args) for impl in case.impls for mode in args.modes}
    assert {(r["op"], r["impl"], tuple(r["grid"]), r["keys"], r["mode"]) for r in rows} == expected
    not_here = {"n/a: FlexAttention has no backward on CPU",
                f"n/a: {peers.avg_pool3d_problem('cpu', torch.bfloat16)}"}  # None where this torch has the kernel
    for r in rows:
        assert r["status"] == "ok" or r["status"] in not_here, (r["op"], r["impl"], r["mode"], r["status"])
        assert r["status"] != "ok" or r["median_ms"] > 0
    assert {r["impl"] for r in rows if r["op"] == "LocalGlobalAttention" and r["status"] == "ok"} == {
        "layer[cpu]", "layer[torch]", "layer(partition+sdpa, avg_pool3d, sdpa)"}
