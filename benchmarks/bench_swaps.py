"""The client swaps on CPU: torchvision's Video Swin and Swin, timm's Swin and MONAI's SwinUNETR, each as
the client runs it against the same model after `swap_torchvision_attention` / `swap_timm_attention` /
`swap_monai_attention`.

Per client model, float32 and bfloat16 (the model cast), randomly initialised weights:
- one stage's attention: the first stage's W-MSA and SW-MSA modules in a row (torchvision's
  attention module; timm's block ``_attn``, i.e. roll, pad, partition, attention, reverse; MONAI's
  block ``forward_part1``, norm, pad, roll, partition, attention with the stage's region mask (built
  once, which favours MONAI: its stage rebuilds it every forward), reverse),
  forward + backward of a random input of that stage's shape;
- the whole model: forward + backward of a random clip/image (the loss is the logits' sum), and
  inference (``torch.inference_mode``).
Models in eval mode (no stochastic depth: the same work every step), the swapped logits checked
against the client's before timing (their largest difference is in the results).
Implementations: the client's eager attention, its fused path where it has one (timm's ``fused_attn``:
SDPA with a bias + mask tensor; MONAI's ``use_flash_attention``: SDPA, at inference only), and the
swapped model. Timed in alternating rounds on CPU (the ratio
is the median of per-round ratios to the client's eager time), peak memory from the profiler's
allocation events. Needs the selected clients' packages: torchvision and timm (the clients venv, see
.ci/clients.sh), MONAI (the development venv has it).

    python benchmarks/bench_swaps.py --threads 2
    python benchmarks/bench_swaps.py --clients timm-swin_tiny --dtypes float32 --min-run-time 1
    python benchmarks/bench_swaps.py --clients monai-swin_unetr --dtypes float32   # in the development venv
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable. Appended, not prepended:
    # the clients' venv has its own torch and logo_attn installed against it, which must win over the
    # checkout (whose in-place extension, if any, was built against the repository's pinned torch).
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import peers
from benchmarks.cli import positive_float, positive_int
from benchmarks.environment import ROOT, start_run
from benchmarks.results import table, write_results
from benchmarks.timing import measure_many, paired_ratio, peak_memory
from logo_attn import swap_monai_attention, swap_timm_attention, swap_torchvision_attention

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Client:
    """A client model: how to build it, its input, its first stage's two attentions, its swap."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    stage_attention: Callable[[nn.Module], list[Callable]]  # the W-MSA and SW-MSA callables of stage 1
    swap: Callable[[nn.Module], nn.Module]
    fused: Callable[[nn.Module], nn.Module] | None = None  # the client's own fused path, if any


def torchvision_attentions(model: nn.Module) -> list[Callable]:
    from torchvision.models.swin_transformer import ShiftedWindowAttention
    from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

    return [m for m in model.modules() if isinstance(m, (ShiftedWindowAttention, ShiftedWindowAttention3d))][:2]


def timm_attentions(model: nn.Module) -> list[Callable]:
    blocks = [m for m in model.modules() if hasattr(m, "_attn") and hasattr(m, "shift_size")][:2]
    return [block._attn for block in blocks]


class MonaiAttentionPart(nn.Module):
    """A SwinUNETR block's attention half as a module of its own: MONAI's ``forward_part1`` with the
    stage's region mask (built on the first call for that grid, then kept), or a swapped block's
    ``attention_part``. ``block`` is what the model calls with the stage's tokens."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.masks: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.block, "attention_part"):
            return self.block.attention_part(x)
        from monai.networks.nets.swin_unetr import compute_mask, get_window_size

        grid = tuple(x.shape[1:4])
        if grid not in self.masks:
            window, shift = get_window_size(grid, self.block.window_size, self.block.shift_size)
            self.masks[grid] = compute_mask(list(peers.swin_padded(grid, window)), window, shift, x.device)
        return self.block.forward_part1(x, self.masks[grid])


def monai_attentions(model: nn.Module) -> list[Callable]:
    return [MonaiAttentionPart(block) for block in model.swinViT.layers1[0].blocks[:2]]


def monai_fused(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if hasattr(module, "use_flash_attention"):
            module.use_flash_attention = True
    return model


def timm_fused(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    return model


def clients(args) -> dict[str, Client]:
    def torchvision_model(name):
        def build():
            import torchvision.models as tvm
            import torchvision.models.video as tvv
            return getattr(tvv if name.startswith("swin3d") else tvm, name)(weights=None)
        return build

    def timm_model(name):
        def build():
            import timm
            return timm.create_model(name, pretrained=False)
        return build

    def monai_model():
        from monai.networks.nets import SwinUNETR
        return SwinUNETR(in_channels=1, out_channels=14, feature_size=args.monai_feature_size)

    frames, side = args.video_clip
    return {
        "torchvision-swin3d_t": Client(torchvision_model("swin3d_t"), (args.batch, 3, frames, side, side),
                                       torchvision_attentions, swap_torchvision_attention),
        "torchvision-swin_t": Client(torchvision_model("swin_t"), (args.batch, 3, args.image, args.image),
                                     torchvision_attentions, swap_torchvision_attention),
        "torchvision-swin_v2_t": Client(torchvision_model("swin_v2_t"), (args.batch, 3, args.image_v2, args.image_v2),
                                        torchvision_attentions, swap_torchvision_attention),
        "timm-swin_tiny": Client(timm_model("swin_tiny_patch4_window7_224"), (args.batch, 3, args.image, args.image),
                                 timm_attentions, swap_timm_attention, timm_fused),
        "monai-swin_unetr": Client(monai_model, (args.batch, 1, *[args.monai_size] * 3), monai_attentions,
                                   swap_monai_attention, monai_fused),
    }


def stage_input_shape(client: Client, model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The shape of the tokens the first stage's attention receives (one inference forward)."""
    shapes = []
    first = client.stage_attention(model)[0]
    # the module the model calls with those tokens: timm's block whose _attn it is, MONAI's block
    target = first.__self__ if hasattr(first, "__self__") else getattr(first, "block", first)
    handle = target.register_forward_pre_hook(lambda _m, inputs: shapes.append(tuple(inputs[0].shape)))
    with torch.inference_mode():
        model(x)
    handle.remove()
    return shapes[0]


def implementations(client: Client, dtype: torch.dtype) -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    # eval(): no stochastic depth or dropout, so every step does the same work and the logits compare
    # (Swin has no batch norm: eval changes nothing else; backward runs all the same)
    eager = client.build().to(dtype).eval()
    impls = [("client eager", eager)]
    if client.fused is not None:
        impls.append(("client fused (SDPA)", client.fused(copy.deepcopy(eager))))
    impls.append(("swapped", client.swap(copy.deepcopy(eager))))
    return impls


def model_steps(model: nn.Module, x: torch.Tensor) -> dict[str, Callable]:
    def fwdbwd():
        model(x).float().sum().backward()
        model.zero_grad(set_to_none=True)

    def inference():
        with torch.inference_mode():
            model(x)

    return {"fwd+bwd": fwdbwd, "inference": inference}


def attention_step(attentions: list[Callable], tokens: torch.Tensor) -> Callable:
    def fwdbwd():
        x = tokens.detach().requires_grad_(True)
        attentions[1](attentions[0](x)).float().sum().backward()
        for attn in attentions:
            owner = attn.__self__ if hasattr(attn, "__self__") else attn
            owner.zero_grad(set_to_none=True)

    return fwdbwd


def measure_client(name: str, client: Client, dtype_name: str, args) -> list[dict]:
    dtype = DTYPES[dtype_name]
    impls = implementations(client, dtype)
    x = torch.randn(client.input_shape, dtype=dtype)
    with torch.inference_mode():  # checked before timed: the swapped logits against the client's
        logits = [model(x).double() for _, model in impls]
    difference = [(a - logits[0]).abs().max().item() for a in logits]
    tokens = torch.randn(stage_input_shape(client, impls[0][1], x), dtype=dtype)
    cases = {("stage-1 attention (W-MSA + SW-MSA)", "fwd+bwd"):
             [attention_step(client.stage_attention(model), tokens) for _, model in impls]}
    for mode in ("fwd+bwd", "inference"):
        cases[("whole model", mode)] = [model_steps(model, x)[mode] for _, model in impls]
    rows = []
    for (part, mode), steps in cases.items():
        timings = measure_many(steps, torch.device("cpu"), threads=args.threads, min_run_time=args.min_run_time,
                               min_samples=args.min_samples, warmup=1)
        peaks = [peak_memory(step, torch.device("cpu")) for step in steps]
        for (impl, _), timing, peak, diff in zip(impls, timings, peaks, difference):
            rows.append(dict(client=name, part=part, mode=mode, dtype=dtype_name, impl=impl,
                             input="x".join(map(str, client.input_shape)),
                             stage_tokens="x".join(map(str, tokens.shape)), ms=timing.median * 1e3,
                             p20_ms=timing.p20 * 1e3, p80_ms=timing.p80 * 1e3, samples=timing.samples,
                             speedup_vs_eager=paired_ratio(timings[0], timing), peak_mib=peak / 2**20,
                             peak_vs_eager=peak / peaks[0] if peaks[0] else None,
                             logits_max_abs_diff_vs_eager=diff))
        print(table([[r["client"], r["part"], r["mode"], r["dtype"], r["impl"], r["ms"],
                      f"{r['p20_ms']:.4g}-{r['p80_ms']:.4g}", r["speedup_vs_eager"], r["peak_mib"], r["peak_vs_eager"]]
                     for r in rows[-len(impls):]],
                    ["client", "part", "mode", "dtype", "impl", "ms", "p20-p80", "x vs eager", "peak MiB", "peak/eager"]),
              flush=True)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", nargs="+", default=["torchvision-swin3d_t", "torchvision-swin_t",
                                                          "torchvision-swin_v2_t", "timm-swin_tiny"])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--video-clip", type=positive_int, nargs=2, default=[16, 112], metavar=("FRAMES", "SIDE"),
                        help="Video Swin input: frames and side in pixels (default 16 112)")
    parser.add_argument("--image", type=positive_int, default=224, help="Swin / timm image side (default 224)")
    parser.add_argument("--image-v2", type=positive_int, default=256, help="Swin V2 image side (default 256)")
    parser.add_argument("--monai-size", type=positive_int, default=64,
                        help="SwinUNETR input volume edge, a multiple of 32, at least 64 (default 64)")
    parser.add_argument("--monai-feature-size", type=positive_int, default=48,
                        help="SwinUNETR feature_size, a multiple of 12 (default 48, the BTCV model's)")
    parser.add_argument("--min-run-time", type=positive_float, default=2.0, help="seconds per implementation and case")
    parser.add_argument("--min-samples", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--out", type=Path, help="result path prefix (default benchmarks/results/bench_swaps_cpu)")
    args = parser.parse_args(argv)
    known = clients(args)
    unknown = [c for c in args.clients if c not in known]
    if unknown:
        parser.error(f"--clients: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.monai_size % 32 or args.monai_size < 64 or args.monai_feature_size % 12:
        # below 64 the bottleneck is one voxel, where MONAI's instance norm raises
        parser.error(f"--monai-size must be a multiple of 32, at least 64, and --monai-feature-size of 12, got "
                     f"{args.monai_size} and {args.monai_feature_size}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    env = start_run(torch.device("cpu"), args.threads)
    for package in sorted({name.split("-")[0] for name in args.clients}):  # the clients' versions
        env[package] = importlib.import_module(package).__version__
    known = clients(args)
    prefix = args.out or ROOT / "benchmarks" / "results" / "bench_swaps_cpu"
    config = {k: v for k, v in vars(args).items() if k != "out"}
    rows = []
    for dtype_name in args.dtypes:
        for name in args.clients:
            rows += measure_client(name, known[name], dtype_name, args)
            # after every client: a long run stopped early keeps what it measured
            paths = write_results(prefix, env, config, rows)
    print("wrote " + ", ".join(map(str, paths)))
    return rows


if __name__ == "__main__":
    main()
