"""Time logo_attn's ops and layer against the peers a user would write, in one run.

For each op (local_attention, global_attention, window_pool), the whole LocalGlobalAttention
layer, and Swin's W-MSA / SW-MSA (local_attention with shift and relative-position bias, against
MONAI's eager window attention and FlexAttention, at Video-Swin-T's and Swin-UNETR's stages and 2-D
Swin-T's stages 1 and 3 as grids of one frame), every
implementation (the op on each selected backend, then the peers of `benchmarks.peers`) is first
checked against the float64 PyTorch reference (output and gradients), then timed forward, backward
and forward+backward: median with 20/80 percentiles, achieved TFLOP/s (FLOPs from `logo_attn.flops`,
the formulas the ops register; for the layer, FlopCounterMode's count of the same layer), achieved
GB/s (each input read once, each output written once), the fraction of the device's roofline
(%roof: the time the row's FLOPs at the matrix peak of its dtype, or its bytes at the copy
bandwidth, would take, whichever is longer, over its time) where it is known: on CPU measured in the
same run (`benchmarks.environment.measure_cpu_limits`: fp32 and bf16 `torch.mm`, a large copy), on
GPU from `benchmarks.environment.ROOFLINES` - and peak memory. `t/t_op` compares a row with the
first implementation (the op on the first backend) in the same run: above 1, the op is faster. On
CPU the implementations of a case are timed in alternating rounds and `t/t_op` is the median of the
per-round ratios, so a change in the machine's load during the run does not favour one of them.
On CPU in bf16/fp16, where local attention's products run on AMX (`python -m logo_attn.info`), the
local rows add `op[cpu] fp32 tiles`: the same kernels with those dtypes converted to fp32, as on a CPU
without AMX, timed in the same rounds.

    python benchmarks/bench_ops.py                       # CPU preset: B=4, 16x7x7, window 2x7x7, 8x64, fp32, 2 threads
    python benchmarks/bench_ops.py --preset gpu          # bf16, B=32, grids 16x7x7 and 16x14x14
    python benchmarks/bench_ops.py --backend cpu torch --ops local --modes fwdbwd --grid 16x14x14
    python benchmarks/bench_ops.py --ops swin --swin-variants SW-MSA --modes fwdbwd --min-run-time 0.1

Results go to benchmarks/results/bench_ops_<device>.json and .csv (override with --out). The same
cases run as pytest-benchmark tests (`pytest benchmarks --benchmark-only`, benchmarks/test_bench_ops.py),
built by `cases` below; this script keeps the alternating rounds that the ratios need.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `logo_attn` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor

import logo_attn
from benchmarks import peers
from benchmarks.cli import check_device, convert, positive_float, positive_int, triple
from benchmarks.counting import count_flops
from benchmarks.environment import (ROOT, Roofline, cpu_kernel_features, device_tag, measure_cpu_limits, roofline_for,
                                    start_run)
from benchmarks.results import table, write_results
from benchmarks.timing import measure_many, paired_ratio, peak_memory
from logo_attn import backends, reference
from logo_attn.flops import attention_flops
from logo_attn.geometry import NO_SHIFT, attended_pairs, bias_table_shape, clip_shift, clip_window, num_windows
from logo_attn.tolerance import HALF, error_bound, max_error

MODES = ("fwd", "bwd", "fwdbwd")
LOWP_NAME = "reference[PyTorch low precision]"
MODE_LABELS = {"fwd": "fwd", "bwd": "bwd", "fwdbwd": "fwd+bwd"}
OPS = ("local", "global", "pool", "layer", "swin")
LOCAL_PEERS = ("partition_sdpa", "flex", "masked_full")
GLOBAL_PEERS = ("sdpa",)
POOL_PEERS = ("avg_pool3d", "view_mean", "partition_mean")
LAYER_PEERS = ("sdpa_layer",)
SWIN_PEERS = ("monai_eager", "flex")  # flex: the same peer name as the local op's
PEERS = LOCAL_PEERS + GLOBAL_PEERS + POOL_PEERS + LAYER_PEERS + ("monai_eager",)

# The swin rows: local_attention with relative-position bias, as W-MSA (no shift) and SW-MSA (shift
# window // 2 on every axis the window does not cover whole), at these stages, as
# "FxHxW:fxhxw:HEADSxHEAD_DIM" (the same syntax --swin-shapes takes for other shapes).
SWIN_SHAPES = {
    "video-swin-t": "8x56x56:8x7x7:3x32",  # Video-Swin-T's first stage (C = 96)
    "swin-unetr": "32x32x32:7x7x7:3x16",  # a Swin-UNETR stage (feature size 48); 7 does not divide 32
    # 2-D Swin as a grid of one frame: Swin-T's stages 1 (C = 96) and 3 (C = 384) at 224^2
    "swin-t-stage1": "1x56x56:1x7x7:3x32",
    "swin-t-stage3": "1x14x14:1x7x7:12x32",
}
SWIN_VARIANTS = ("W-MSA", "SW-MSA")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
DTYPE_LABELS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
# fp64 / fp32: the largest relative error (||x - ref|| / ||ref|| against float64) accepted before a
# row is timed; fp32 sums in another order stay near 1e-6. fp16 / bf16 are judged as the tests judge
# them (logo_attn.tolerance): at most twice the error of the same computation in PyTorch's own low
# precision (`Case.lowp`), tensor by tensor. A relative error says nothing there: a gradient that is
# near zero in float64 (a sum of many cancelling terms) is mostly rounding in bf16, PyTorch's too.
CHECK_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}

PRESETS = {
    # the CPU target shape of the README's table; the Swin stages at batch 1 (on 2 cores one fwd+bwd of MONAI's eager
    # attention takes about a second there, and the float64 reference check several)
    "cpu": dict(device="cpu", dtype="float32", batch=4, grids=["16x7x7"], window="2x7x7", heads=8, head_dim=64,
                global_keys=None, threads=2, swin_shapes=list(SWIN_SHAPES), swin_batch=1),
    # the GPU target shapes (B=32, 8 heads x 64, bf16); Nk = 8..128 for the global op; the Swin stages at batch 8
    "gpu": dict(device="cuda", dtype="bfloat16", batch=32, grids=["16x7x7", "16x14x14"], window="2x7x7", heads=8,
                head_dim=64, global_keys=[8, 32, 128], threads=None, swin_shapes=list(SWIN_SHAPES), swin_batch=8),
}


@dataclass(frozen=True)
class SwinShape:
    grid: tuple[int, int, int]
    window: tuple[int, int, int]  # as configured, before clipping to the grid
    heads: int
    head_dim: int


def parse_swin_shape(text: str) -> SwinShape:
    """A name of SWIN_SHAPES or "FxHxW:fxhxw:HEADSxHEAD_DIM", e.g. 8x56x56:8x7x7:3x32."""
    spec = SWIN_SHAPES.get(text, text)
    try:
        grid, window, heads = spec.split(":")
        heads, head_dim = (int(n) for n in heads.lower().split("x"))
        if min(heads, head_dim) < 1:
            raise ValueError
        return SwinShape(triple(grid), triple(window), heads, head_dim)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SWIN_SHAPES)} or FxHxW:fxhxw:HEADSxHEAD_DIM, "
                                         f"got {text!r}") from None


@dataclass
class Impl:
    """One implementation of a case: `fn()` runs its forward; gradients are taken for `leaves`."""

    name: str
    fn: Callable[[], Tensor]
    leaves: list[Tensor]
    no_backward: str | None = None  # why it has no backward, if it has none
    unsupported: str | None = None  # why it cannot run at all here (a dtype PyTorch has no kernel for)


@dataclass
class Case:
    """One op at one shape: its implementations, the float64 reference they are checked against, the
    FLOPs and bytes per mode, and for fp16/bf16 the same computation by PyTorch in that dtype (`lowp`),
    whose error bounds theirs. `name` is the --ops name (plus the variant where an op has several)."""

    name: str
    op: str
    shape: dict
    dtype: torch.dtype
    impls: list[Impl]
    reference: Impl  # float64, PyTorch reference backend
    flops: dict[str, int | None]
    bytes: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(MODES))
    lowp: Impl | None = None

    def label(self, mode: str) -> str:
        """The case and mode in one line, e.g. 'local fwd+bwd B4 16x7x7 w2x7x7 8x64 fp32' (pytest-benchmark's group)."""
        shape = self.shape
        parts = [self.name, MODE_LABELS[mode], f"B{shape['batch']}", "x".join(map(str, shape["grid"]))]
        if shape["window"]:
            parts.append("w" + "x".join(map(str, shape["window"])))
        if any(shape.get("shift") or ()):
            parts.append("s" + "x".join(map(str, shape["shift"])))
        if shape["keys"]:
            parts.append(f"Nk{shape['keys']}")
        parts.append(f"{shape['heads']}x{shape['head_dim']}" if shape["heads"] else f"C{shape['head_dim']}")
        return " ".join([*parts, DTYPE_LABELS[self.dtype]])

    @functools.cached_property
    def expected(self) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
        """The float64 reference's output, its gradients for a random output gradient, and that gradient."""
        torch.manual_seed(1)
        out = self.reference.fn()
        dout = torch.randn_like(out)
        return out, torch.autograd.grad(out, self.reference.leaves, dout), dout

    @functools.cached_property
    def lowp_results(self) -> tuple[Tensor, ...]:
        """`lowp`'s output and gradients (for the same output gradient as `expected`)."""
        out, grads = forward_backward(self.lowp, self.expected[2])
        return (out, *grads)


def _fwdbwd(fwd: int | None, bwd: int | None) -> dict[str, int | None]:
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": None if fwd is None or bwd is None else fwd + bwd}


def _randn(*shape: int, device, dtype, requires_grad: bool = True) -> Tensor:
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(requires_grad)


def _float64(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [t.detach().double().requires_grad_() for t in tensors]


def _attention_bytes(batch: int, queries: int, keys: int, heads: int, head_dim: int, dtype: torch.dtype):
    """Fewest bytes moved: fwd reads q, k, v and writes out + fp32 lse; bwd reads q, k, v, out, dout, lse, writes dq, dk, dv."""
    q = batch * queries * heads * head_dim * dtype.itemsize
    kv = batch * keys * heads * head_dim * dtype.itemsize
    lse = batch * heads * queries * 4
    return _fwdbwd(2 * q + 2 * kv + lse, 3 * q + 2 * kv + lse + q + 2 * kv)


@contextlib.contextmanager
def cpu_half_gemm(mode: str):
    """bf16/fp16 local attention's product on the C++ CPU kernels set to `mode` inside the block."""
    from logo_attn import _C

    previous = _C.set_cpu_half_gemm(mode)
    try:
        yield
    finally:
        _C.set_cpu_half_gemm(previous)


def active_cpu_half_gemm(dtype: torch.dtype) -> str:
    """The product bf16/fp16 local attention runs on in the C++ CPU kernels now ("none": the fp32
    tiles; also for other dtypes and without the extension)."""
    key = {torch.bfloat16: "bf16_gemm", torch.float16: "fp16_gemm"}.get(dtype)
    return (cpu_kernel_features() or {}).get(key, "none")


class LocalOnFp32Tiles(torch.autograd.Function):
    """local_attention on the C++ CPU kernels with bf16/fp16 on the fp32 tiles, forward and backward,
    whatever the CPU's default product: the row the AMX path is compared with in the same run."""

    @staticmethod
    def forward(ctx, q, k, v, grid, window):
        scale = q.shape[-1] ** -0.5
        with cpu_half_gemm("off"):
            out, lse = torch.ops.logo_attn_C.local_attn_fwd(q, k, v, grid, window, list(NO_SHIFT), None, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.geometry = grid, window, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        grid, window, scale = ctx.geometry
        with cpu_half_gemm("off"):
            dq, dk, dv, _ = torch.ops.logo_attn_C.local_attn_bwd(dout, *ctx.saved_tensors, grid, window,
                                                                  list(NO_SHIFT), None, scale, False)
        return dq, dk, dv, None, None


def local_case(args, grid, backend_names, peer_names, device, dtype) -> Case:
    B, heads, d, window = args.batch, args.heads, args.head_dim, clip_window(grid, args.window)
    tokens = math.prod(grid)
    qkv = _randn(B, tokens, 3, heads, d, device=device, dtype=dtype)  # one packed projection, as a layer has

    def op(backend, packed=qkv):
        return lambda: logo_attn.local_attention(*packed.unbind(2), grid, window, backend=backend)

    impls = [Impl(f"op[{b}]", op(b), [qkv]) for b in backend_names]
    if device.type == "cpu" and "cpu" in backend_names and active_cpu_half_gemm(dtype) != "none":
        impls.append(Impl("op[cpu] fp32 tiles", lambda: LocalOnFp32Tiles.apply(*qkv.unbind(2), list(grid), list(window)),
                          [qkv]))
    if "partition_sdpa" in peer_names:
        impls.append(Impl("partition+sdpa", lambda: peers.partition_sdpa(*qkv.unbind(2), grid, window), [qkv]))
    if "flex" in peer_names:
        flex = peers.FlexLocalAttention(grid, window, device)
        packed = qkv if flex.has_backward else qkv.detach()
        impls.append(Impl("flex(compiled)", lambda: flex(*packed.unbind(2)), [qkv],
                          None if flex.has_backward else "FlexAttention has no backward on CPU"))
    if "masked_full" in peer_names:
        impls.append(Impl("full sdpa+mask", lambda: peers.masked_full_sdpa(*qkv.unbind(2), grid, window), [qkv]))
    (qkv64,) = _float64([qkv])
    pairs = attended_pairs(grid, window)
    lowp = lambda: reference.local_attention_with_lse(*qkv.unbind(2), grid, window, compute_dtype=dtype)[0]  # noqa: E731
    return Case(
        "local", "local_attention", dict(batch=B, grid=grid, window=window, heads=heads, head_dim=d, keys=None), dtype,
        impls,
        Impl("reference[fp64]", op("torch", qkv64), [qkv64]),
        _fwdbwd(attention_flops(pairs, B, heads, d), attention_flops(pairs, B, heads, d, backward=True)),
        _attention_bytes(B, tokens, tokens, heads, d, dtype),
        lowp=Impl(LOWP_NAME, lowp, [qkv]),
    )


def global_case(args, grid, keys, backend_names, peer_names, device, dtype) -> Case:
    B, heads, d = args.batch, args.heads, args.head_dim
    tokens = math.prod(grid)
    q = _randn(B, tokens, heads, d, device=device, dtype=dtype)
    kv = _randn(B, keys, 2, heads, d, device=device, dtype=dtype)  # the layer's packed k/v projection

    def op(backend, q=q, kv=kv):
        return lambda: logo_attn.global_attention(q, *kv.unbind(2), backend=backend)

    impls = [Impl(f"op[{b}]", op(b), [q, kv]) for b in backend_names]
    if "sdpa" in peer_names:
        impls.append(Impl("sdpa", lambda: peers.sdpa_global(q, *kv.unbind(2)), [q, kv]))
    q64, kv64 = _float64([q, kv])
    lowp = lambda: reference.global_attention_with_lse(q, *kv.unbind(2), compute_dtype=dtype)[0]  # noqa: E731
    return Case(
        "global", "global_attention", dict(batch=B, grid=grid, window=None, heads=heads, head_dim=d, keys=keys), dtype,
        impls,
        Impl("reference[fp64]", op("torch", q64, kv64), [q64, kv64]),
        _fwdbwd(attention_flops(tokens * keys, B, heads, d), attention_flops(tokens * keys, B, heads, d, backward=True)),
        _attention_bytes(B, tokens, keys, heads, d, dtype),
        lowp=Impl(LOWP_NAME, lowp, [q, kv]),
    )


def pool_case(args, grid, backend_names, peer_names, device, dtype) -> Case:
    B, C, window = args.batch, args.heads * args.head_dim, clip_window(grid, args.window)
    tokens, windows = math.prod(grid), math.prod(num_windows(grid, window))
    x = _randn(B, tokens, C, device=device, dtype=dtype)

    def op(backend, x=x):
        return lambda: logo_attn.window_pool(x, grid, window, backend=backend)

    impls = [Impl(f"op[{b}]", op(b), [x]) for b in backend_names]
    if "avg_pool3d" in peer_names:
        impls.append(Impl("avg_pool3d", lambda: peers.avg_pool3d_pool(x, grid, window), [x],
                          unsupported=peers.avg_pool3d_problem(device.type, dtype)))
    if "view_mean" in peer_names and not any(g % w for g, w in zip(grid, window)):
        impls.append(Impl("view+mean", lambda: peers.view_mean(x, grid, window), [x]))
    if "partition_mean" in peer_names:
        impls.append(Impl("partition+mean", lambda: peers.partition_mean(x, grid, window), [x]))
    (x64,) = _float64([x])
    moved = (B * tokens * C + B * windows * C) * dtype.itemsize  # read x, write the means (and the reverse)
    # the reference sums in fp32 whatever the dtype, as a user's x.float().mean() would
    return Case("pool", "window_pool", dict(batch=B, grid=grid, window=window, heads=None, head_dim=C, keys=None),
                dtype, impls, Impl("reference[fp64]", op("torch", x64), [x64]), _fwdbwd(None, None),
                _fwdbwd(moved, moved), lowp=Impl(LOWP_NAME, op("torch"), [x]))


def layer_flops(dim, heads, window, prefix, batch, grid) -> dict[str, int]:
    """FlopCounterMode's count of the layer (projections + attention) on the meta device, fwd and bwd."""
    tokens = prefix + math.prod(grid)

    def run():
        with torch.device("meta"):
            layer = logo_attn.LocalGlobalAttention(dim, heads, window, num_prefix_tokens=prefix, backend="torch")
            x = torch.empty(batch, tokens, dim, requires_grad=True)
        return layer(x, grid)

    fwd = count_flops(run)["total"]
    return _fwdbwd(fwd, count_flops(run, backward=True)["total"] - fwd)


def layer_case(args, grid, backend_names, peer_names, device, dtype) -> Case:
    B, heads, C, P = args.batch, args.heads, args.heads * args.head_dim, args.prefix
    layer = logo_attn.LocalGlobalAttention(C, heads, args.window, num_prefix_tokens=P).to(device, dtype)
    x = _randn(B, P + math.prod(grid), C, device=device, dtype=dtype)

    def variant(module, backend=None, x=x):
        module = copy.deepcopy(module).to(dtype=x.dtype)
        if backend is not None:
            module.backend = backend
        return lambda: module(x, grid), [x, *module.parameters()]

    impls = [Impl(f"layer[{b}]", *variant(layer, b)) for b in backend_names]
    if "sdpa_layer" in peer_names:
        user = peers.SDPALocalGlobalAttention(C, heads, args.window, num_prefix_tokens=P).to(device, dtype)
        user.load_state_dict(layer.state_dict())
        impls.append(Impl("layer(partition+sdpa, avg_pool3d, sdpa)", *variant(user)))
    (x64,) = _float64([x])
    window = clip_window(grid, args.window)
    return Case(
        "layer", "LocalGlobalAttention", dict(batch=B, grid=grid, window=window, heads=heads, head_dim=args.head_dim,
                                              keys=P + math.prod(num_windows(grid, window))),
        dtype, impls, Impl("reference[fp64]", *variant(layer, "torch", x64)),
        layer_flops(C, heads, args.window, P, B, grid),
        # PyTorch's own bf16: the layer's Linear/LayerNorm in the dtype, its attention on the reference
        lowp=Impl(LOWP_NAME, *variant(layer, "torch")),
    )


def swin_case(args, shape: SwinShape, variant: str, backend_names, peer_names, device, dtype) -> Case:
    """Swin's window attention with relative-position bias: the op alone on qkv views, against the
    eager attention MONAI's SwinTransformerBlock runs and compiled FlexAttention (same block mask,
    the bias as a score_mod). The bias table is a leaf, so backward computes its gradient too."""
    B, heads, d = args.swin_batch, shape.heads, shape.head_dim
    grid, window = shape.grid, clip_window(shape.grid, shape.window)
    shift = NO_SHIFT if variant == "W-MSA" else clip_shift(grid, shape.window, [w // 2 for w in shape.window])
    qkv = _randn(B, math.prod(grid), 3, heads, d, device=device, dtype=dtype)
    table = _randn(heads, *bias_table_shape(shape.window), device=device, dtype=dtype)

    def op(backend, packed=qkv, table=table):
        return lambda: logo_attn.local_attention(*packed.unbind(2), grid, shape.window, shift=shift, bias=table,
                                                 backend=backend)

    impls = [Impl(f"op[{b}]", op(b), [qkv, table]) for b in backend_names]
    if "monai_eager" in peer_names:
        impls.append(Impl("monai eager", lambda: peers.monai_eager_window_attention(*qkv.unbind(2), grid, window,
                                                                                    shift, table), [qkv, table]))
    if "flex" in peer_names:
        flex = peers.FlexLocalAttention(grid, window, device, shift, table)
        packed = qkv if flex.has_backward else qkv.detach()
        impls.append(Impl("flex(compiled)", lambda: flex(*packed.unbind(2)), [qkv, table],
                          None if flex.has_backward else "FlexAttention has no backward on CPU"))
    qkv64, table64 = _float64([qkv, table])
    pairs = attended_pairs(grid, window, shift)
    lowp = lambda: reference.local_attention_with_lse(*qkv.unbind(2), grid, window, shift=shift, bias=table,  # noqa: E731
                                                      compute_dtype=dtype)[0]
    return Case(
        f"swin {variant}", "local_attention+bias",
        dict(batch=B, grid=grid, window=window, shift=shift, heads=heads, head_dim=d, keys=None), dtype, impls,
        Impl("reference[fp64]", op("torch", qkv64, table64), [qkv64, table64]),
        _fwdbwd(attention_flops(pairs, B, heads, d), attention_flops(pairs, B, heads, d, backward=True)),
        _attention_bytes(B, math.prod(grid), math.prod(grid), heads, d, dtype),
        lowp=Impl(LOWP_NAME, lowp, [qkv, table]),
    )


def relative_error(x: Tensor, ref: Tensor) -> float:
    """||x - ref|| / ||ref||, with ||ref|| floored at an RMS of 0.1. Inputs and output gradients are
    unit-variance normal; some gradients are exactly zero (q and k when there is a single key), and
    rounding noise over zero is not a relative error."""
    ref = ref.detach().double()
    floor = 0.1 * max(ref.numel(), 1) ** 0.5
    return float((x.detach().double() - ref).norm() / ref.norm().clamp_min(floor))


def forward_backward(impl: Impl, dout: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    out = impl.fn()
    if impl.no_backward or dout is None:
        return out, ()
    return out, torch.autograd.grad(out, impl.leaves, dout.to(out.dtype))


def check(impl: Impl, case: Case) -> float:
    """Largest relative error of the output and gradients against the float64 reference; raises where
    one differs by more than the case dtype allows (`CHECK_TOLERANCE`; fp16/bf16: the tests' rule)."""
    if impl.unsupported:
        raise NotImplementedError(impl.unsupported)
    ref_out, ref_grads, dout = case.expected
    out, grads = forward_backward(impl, dout)
    got, want = (out, *grads), (ref_out, *ref_grads)
    names = ["output"] + [f"gradient of input {i}" for i in range(len(grads))]
    worst = max(relative_error(g, w) for g, w in zip(got, want))
    if case.dtype in HALF:
        for name, g, w, low in zip(names, got, want, case.lowp_results):
            error = max_error(g, w)
            bound, rule = error_bound(case.dtype, w.abs().max().item(), max_error(low, w))
            if not error <= bound:  # NaN fails too
                raise AssertionError(f"{name} differs from the float64 reference: max error {error:.2e} > "
                                     f"{bound:.2e} ({rule})")
    elif not worst <= CHECK_TOLERANCE[case.dtype]:
        raise AssertionError(f"differs from the float64 reference: relative error {worst:.2e} > "
                             f"{CHECK_TOLERANCE[case.dtype]:.0e}")
    return worst


def mode_fn(impl: Impl, mode: str, dout: Tensor) -> Callable[[], object]:
    if mode == "fwd":
        return impl.fn
    if mode == "bwd":
        out = impl.fn()
        return lambda: torch.autograd.grad(out, impl.leaves, dout, retain_graph=True)
    return lambda: torch.autograd.grad(impl.fn(), impl.leaves, dout)


def run_case(case: Case, modes: Sequence[str], device, threads: int, min_run_time: float,
             roof: Roofline | None) -> list[dict]:
    """Check every implementation, then time those that passed, mode by mode (interleaved on CPU)."""
    dtype = case.dtype
    dout = case.expected[2].to(dtype)
    rows = {}
    for impl in case.impls:
        try:
            error, status = (None, f"n/a: {impl.unsupported}") if impl.unsupported else (check(impl, case), "ok")
        except Exception as exc:  # noqa: BLE001  (a failing implementation becomes a row, not a crash)
            error, status = None, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        for mode in modes:
            rows[impl.name, mode] = dict(
                op=case.op, impl=impl.name, mode=mode, **case.shape, dtype=str(dtype).removeprefix("torch."),
                status=f"n/a: {impl.no_backward}" if status == "ok" and mode != "fwd" and impl.no_backward else status,
                check_rel_err=error, median_ms=None, p20_ms=None, p80_ms=None, samples=None, tflops=None, gbps=None,
                roofline_pct=None, peak_mib=None, t_over_t_op=None)
    for mode in modes:
        runnable = [impl for impl in case.impls if rows[impl.name, mode]["status"] == "ok"]
        fns = [mode_fn(impl, mode, dout) for impl in runnable]
        timings = measure_many(fns, device, threads=threads, min_run_time=min_run_time)
        flops, moved = case.flops[mode], case.bytes[mode]
        for impl, fn, timing in zip(runnable, fns, timings):
            row = rows[impl.name, mode]
            row.update(median_ms=timing.median * 1e3, p20_ms=timing.p20 * 1e3, p80_ms=timing.p80 * 1e3,
                       samples=timing.samples, peak_mib=peak_memory(fn, device) / 2**20,
                       t_over_t_op=paired_ratio(timing, timings[0]))
            if flops:
                row["tflops"] = flops / timing.median / 1e12
            if moved:
                row["gbps"] = moved / timing.median / 1e9
            rate = roof.flops_for(dtype) if roof else None
            if rate:
                floor = max((flops or 0) / rate, (moved or 0) / roof.bandwidth)
                row["roofline_pct"] = 100 * floor / timing.median
        del fns  # the backward mode's retained graphs
    return list(rows.values())


def default_backends(device: torch.device, dtype: torch.dtype, head_dim: int) -> list[str]:
    """Every backend that runs natively on `device` here for these inputs, as the dispatcher decides
    (Triton's CPU interpreter is too slow to time)."""
    return [name for name in ("triton", "cuda", "cpu", "torch")
            if not (name == "triton" and device.type == "cpu")
            and backends.why_not(name, device.type, dtype, head_dim) is None]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="shape set (default: gpu on a CUDA machine, else cpu)")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--backend", nargs="+", choices=["cpu", "torch", "triton", "cuda"],
                        help="op backends to time (default: every backend available on the device)")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=None, help="peers to time (default: all)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dtype", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=positive_int)
    parser.add_argument("--grid", dest="grids", nargs="+", help="grids FxHxW, e.g. 16x7x7 16x14x14")
    parser.add_argument("--window", help="window fxhxw, e.g. 2x7x7")
    parser.add_argument("--heads", type=positive_int)
    parser.add_argument("--head-dim", type=positive_int)
    parser.add_argument("--global-keys", type=positive_int, nargs="+",
                        help="key counts Nk of the global op (default: the number of windows)")
    parser.add_argument("--prefix", type=int, default=1, help="prefix (CLS) tokens of the layer rows")
    parser.add_argument("--swin-shapes", nargs="+", type=parse_swin_shape, metavar="SHAPE",
                        help=f"stages of the swin rows: {', '.join(SWIN_SHAPES)} or FxHxW:fxhxw:HEADSxHEAD_DIM "
                             "(default: the preset's)")
    parser.add_argument("--swin-variants", nargs="+", choices=SWIN_VARIANTS, default=list(SWIN_VARIANTS))
    parser.add_argument("--swin-batch", type=positive_int, help="batch of the swin rows (default: the preset's)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: the preset's, else all cores)")
    parser.add_argument("--min-run-time", type=positive_float, default=1.0, help="seconds of samples per CPU timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="result path prefix (default benchmarks/results/bench_ops_<device>)")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset or ("gpu" if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
                                    else "cpu")]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    check_device(parser, args.device)
    args.grids = [convert(parser, "--grid", triple, g) if isinstance(g, str) else g for g in args.grids]
    args.window = convert(parser, "--window", triple, args.window) if isinstance(args.window, str) else args.window
    args.swin_shapes = [convert(parser, "--swin-shapes", parse_swin_shape, s) if isinstance(s, str) else s
                        for s in args.swin_shapes]
    args.threads = args.threads or torch.get_num_threads()
    return args


def cases(args: argparse.Namespace) -> Iterator[Case]:
    """Every case the arguments select, built one at a time (seeded, so the same arguments give the
    same tensors): bench_ops.py times them, benchmarks/test_bench_ops.py turns them into tests."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    names = args.backend or default_backends(device, dtype, args.head_dim)
    peer_names = PEERS if args.peers is None else args.peers
    builders = {
        "local": lambda g: [local_case(args, g, names, peer_names, device, dtype)],
        "global": lambda g: [global_case(args, g, nk, names, peer_names, device, dtype)
                             for nk in (args.global_keys or [math.prod(num_windows(g, clip_window(g, args.window)))])],
        "pool": lambda g: [pool_case(args, g, names, peer_names, device, dtype)],
        "layer": lambda g: [layer_case(args, g, names, peer_names, device, dtype)],
    }
    for grid in args.grids:
        for op in args.ops:
            if op != "swin":
                torch.manual_seed(args.seed)
                yield from builders[op](grid)
    if "swin" in args.ops:
        swin_peers = [name for name in peer_names if name in SWIN_PEERS]
        for shape in args.swin_shapes:
            swin_backends = args.backend or default_backends(device, dtype, shape.head_dim)
            for variant in args.swin_variants:
                torch.manual_seed(args.seed)
                yield swin_case(args, shape, variant, swin_backends, swin_peers, device, dtype)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    env = start_run(device, args.threads)
    if device.type == "cpu":  # this CPU's own ceilings, measured before the rows they bound
        roof = measure_cpu_limits(args.threads)
        env["roofline"] = roof.source
        print(f"# limits: {roof.source}", flush=True)
    else:
        roof = roofline_for(env["device"])
    rows = []
    for case in cases(args):
        case_rows = run_case(case, args.modes, device, args.threads, args.min_run_time, roof)
        print_rows(case_rows)
        rows += case_rows

    config = {key: value for key, value in vars(args).items() if key != "out"}
    prefix = args.out or ROOT / "benchmarks" / "results" / f"bench_ops_{device_tag(device)}"
    for path in write_results(prefix, env, config, rows):
        print(f"wrote {path}")
    return rows


def print_rows(rows: Sequence[dict]) -> None:
    first = rows[0]
    shape = ", ".join(f"{k}={first[k]}" for k in ("batch", "grid", "window", "shift", "heads", "head_dim", "keys")
                      if first.get(k))
    print(f"\n{first['op']} ({shape}, {first['dtype']}); t/t_op = time / time of {first['impl']} in the same run "
          "(>1: op faster)")
    cells = [
        [r["impl"], r["mode"], r["median_ms"], f"{r['p20_ms']:.3g}-{r['p80_ms']:.3g}" if r["p20_ms"] else None,
         r["t_over_t_op"], r["tflops"], r["gbps"], r["roofline_pct"], r["peak_mib"],
         r["check_rel_err"], "" if r["status"] == "ok" else r["status"]]
        for r in rows
    ]
    print(table(cells, ["impl", "mode", "ms", "p20-p80", "t/t_op", "TFLOP/s", "GB/s", "%roof", "peak MiB", "err",
                        "note"]), flush=True)


if __name__ == "__main__":
    main()
