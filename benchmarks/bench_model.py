"""LOGOFormer against the same skeleton with divided, full and spatial-only attention: cost and training step.

1. Cost (always): parameters and GMACs of `logo_attn.model.LOGOFormer` for 16 x 3 x 112 x 112 clips
   (the paper's input) with each attention, counted by FlopCounterMode on the meta device and split
   into the CNN trunk (convolutions), linear layers (projections, MLPs, head) and attention pairs,
   next to the numbers the paper reports (Table 2). MACs as the paper's "FLOPs" column: vision papers
   count one multiply-add as one FLOP (fvcore); FLOPs in the strict sense are twice these.
2. Training step (unless --no-time): forward, cross-entropy, backward and an SGD step, median with
   20/80 percentiles and peak memory, per attention and clip size (112 px -> 16x7x7 tokens,
   224 px -> 16x14x14), with each time's ratio to LOGO's in the same run (on CPU the attentions are
   timed in alternating rounds and the ratio is the median of per-round ratios). bf16 autocast on CUDA.

    python benchmarks/bench_model.py --no-time                      # the cost table only (seconds)
    python benchmarks/bench_model.py --device cuda --batch 32 --sizes 112 224
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `logo_attn` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks.cli import check_device, positive_float, positive_int
from benchmarks.counting import count_flops
from benchmarks.environment import ROOT, device_tag, start_run
from benchmarks.results import table, write_results
from benchmarks.timing import measure_many, paired_ratio, peak_memory
from logo_attn.flops import attention_macs, attention_pairs
from logo_attn.logoformer.model import ATTENTIONS, LOGOFormer

# The paper's Table 2 (FERV39K), "FLOPs" in G. Former-DFER is another architecture (Zhao & Liu 2021:
# CS-Former + T-Former on ResNet-18 features), listed for reference only.
PAPER_GMACS = {"logo": ("LOGO-Former", 10.27), "divided": ("Baseline (spatial + temporal attention)", 25.16)}
OTHER_PAPER_ROWS = (("Former-DFER", 9.11),)


def model_cost(attention: str, frames: int = 16, img_size: int = 112, **config) -> dict:
    """Parameters and MACs of one LOGOFormer for a single clip, counted on the meta device."""
    with torch.device("meta"):
        model = LOGOFormer(num_frames=frames, img_size=img_size, attention=attention, backend="torch", **config)
        clip = torch.empty(1, frames, 3, img_size, img_size)
    counts = count_flops(lambda: model(clip))
    trunk = sum(v for k, v in counts.items() if k.startswith("aten.convolution"))
    dim, depth = model.embed.out_channels, len(model.blocks)
    grid = model.grid
    window = model.blocks[0].attn.window if attention == "logo" else None
    pairs = attention_pairs(attention, grid, window, prefix=1)  # one CLS token (per frame for "spatial")
    return dict(
        attention=attention, frames=frames, img_size=img_size, grid="x".join(map(str, grid)), embed_dim=dim,
        depth=depth, window="x".join(map(str, window)) if window else None,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        gmacs=counts["total"] / 2e9, trunk_gmacs=trunk / 2e9, linear_gmacs=counts["projection"] / 2e9,
        attention_gmacs=counts["attention"] / 2e9,
        analytic_attention_gmacs=depth * attention_macs(pairs, dim) / 1e9,
        **dict(zip(("paper_name", "paper_gmacs"), paper_row(attention, frames, img_size))),
    )


def paper_row(attention: str, frames: int, img_size: int) -> tuple[str | None, float | None]:
    """The paper's reported GMACs for this attention, for its own input (16 x 3 x 112 x 112) only."""
    if (frames, img_size) != (16, 112):
        return None, None
    return PAPER_GMACS.get(attention, (None, None))


def model_table(frames: int = 16, img_sizes: Sequence[int] = (112,), embed_dims: Sequence[int] = (256,),
                depth: int = 4, heads: int = 8) -> list[dict]:
    return [model_cost(attention, frames, size, embed_dim=dim, depth=depth, num_heads=heads)
            for dim in embed_dims for size in img_sizes for attention in ATTENTIONS]


def print_model_table(rows: Sequence[dict]) -> None:
    print("\nLOGOFormer skeleton (ResNet-18 to layer3 -> 1x1 conv -> CLS + blocks), one clip; GMACs (FLOPs = 2 x MACs)")
    cells = [[r["attention"], f"{r['frames']}x3x{r['img_size']}x{r['img_size']}", r["grid"], r["embed_dim"], r["depth"],
              r["window"] or "-", r["params_m"], r["gmacs"], r["trunk_gmacs"], r["linear_gmacs"], r["attention_gmacs"],
              f"{r['paper_name']}: {r['paper_gmacs']}" if r["paper_name"] else "-"] for r in rows]
    cells += [[name, "16x3x112x112", "-", "-", "-", "-", None, None, None, None, None, f"{name}: {gmacs}"]
              for name, gmacs in OTHER_PAPER_ROWS]
    print(table(cells, ["attention", "clip", "grid", "dim", "depth", "window", "params M", "GMACs", "trunk",
                        "linear", "attn", "paper (G)"]))
    mismatched = [r for r in rows if abs(r["attention_gmacs"] - r["analytic_attention_gmacs"]) > 1e-9]
    if mismatched:
        print("MISMATCH: counted attention MACs differ from logo_attn.flops for "
              + ", ".join(f"{r['attention']} {r['grid']}" for r in mismatched))
    else:
        print("counted attention MACs equal logo_attn.flops' analytic pairs x 2 x dim x depth in every row")


def training_step(attention: str, img_size: int, args, device: torch.device):
    """(model, step): one training step (forward, cross-entropy, backward, SGD) on a fixed random batch."""
    torch.manual_seed(args.seed)
    model = LOGOFormer(num_frames=args.frames, img_size=img_size, attention=attention, backend=args.backend,
                       embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    clips = torch.randn(args.batch, args.frames, 3, img_size, img_size, device=device)
    labels = torch.randint(0, model.num_classes, (args.batch,), device=device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and args.dtype == "bfloat16"
                else contextlib.nullcontext())

    def step():
        with autocast:
            loss = F.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def time_training_steps(img_size: int, args, device: torch.device) -> list[dict]:
    """Training steps of every attention at one clip size, timed in alternating rounds on CPU."""
    built = [training_step(attention, img_size, args, device) for attention in args.attention]
    timings = measure_many([step for _, step in built], device, threads=args.threads,
                           min_run_time=args.min_run_time, min_samples=3, warmup=1)
    logo = args.attention.index("logo") if "logo" in args.attention else None
    rows = []
    for attention, (model, step), timing in zip(args.attention, built, timings):
        rows.append(dict(
            attention=attention, img_size=img_size, grid="x".join(map(str, model.grid)), batch=args.batch,
            dtype=args.dtype if device.type == "cuda" else "float32", step_ms=timing.median * 1e3,
            p20_ms=timing.p20 * 1e3, p80_ms=timing.p80 * 1e3, samples=timing.samples,
            t_over_t_logo=None if logo is None else paired_ratio(timing, timings[logo]),
            peak_mib=peak_memory(step, device) / 2**20))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="CUDA: bf16 autocast or plain fp32 (CPU always fp32)")
    parser.add_argument("--attention", nargs="+", choices=ATTENTIONS, default=list(ATTENTIONS))
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[112, 224], help="clip sizes in pixels to time")
    parser.add_argument("--frames", type=positive_int, default=16)
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--embed-dim", type=positive_int, default=256)
    parser.add_argument("--depth", type=positive_int, default=4)
    parser.add_argument("--heads", type=positive_int, default=8)
    parser.add_argument("--backend", default="auto", help="logo_attn backend of the LOGO blocks")
    parser.add_argument("--no-time", dest="time", action="store_false", help="the cost table only")
    parser.add_argument("--min-run-time", type=positive_float, default=1.0)
    parser.add_argument("--threads", type=positive_int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="result path prefix (default benchmarks/results/bench_model_<device>)")
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    if args.embed_dim % args.heads:
        parser.error(f"--embed-dim {args.embed_dim} must be divisible by --heads {args.heads}")
    args.threads = args.threads or torch.get_num_threads()
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    env = start_run(device, args.threads)
    costs = model_table(args.frames, sorted({112, *args.sizes}), (args.embed_dim,), args.depth, args.heads)
    print_model_table(costs)
    steps = []
    if args.time:
        for size in args.sizes:
            try:
                steps += time_training_steps(size, args, device)
            except torch.OutOfMemoryError as error:
                steps += [dict(attention=a, img_size=size, status=f"out of memory: {str(error).splitlines()[0]}")
                          for a in args.attention]
        print(f"\ntraining step (forward, cross-entropy, backward, SGD), batch {args.batch}")
        print(table([[s["attention"], s["img_size"], s.get("grid"), s.get("step_ms"),
                      f"{s['p20_ms']:.4g}-{s['p80_ms']:.4g}" if "p20_ms" in s else None, s.get("t_over_t_logo"),
                      s.get("peak_mib"), s.get("status", "")] for s in steps],
                    ["attention", "px", "grid", "ms", "p20-p80", "t/t_logo", "peak MiB", "note"]))
    prefix = args.out or ROOT / "benchmarks" / "results" / f"bench_model_{device_tag(device)}"
    config = {k: v for k, v in vars(args).items() if k != "out"}
    rows = [dict(kind="cost", **c) for c in costs] + [dict(kind="training_step", **s) for s in steps]
    for path in write_results(prefix, env, config, rows):
        print(f"wrote {path}")
    return dict(costs=costs, steps=steps)


if __name__ == "__main__":
    main()
