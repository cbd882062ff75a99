"""How LOGO attention's cost and speed scale against full, divided (TimeSformer) and spatial-only attention.

The evidence for the paper's O(FHW*fhw + (FHW)^2/fhw) claim (eq. 9), on your machine:

1. analytic cost of each scheme's attention from `logo_attn.flops`: attended pairs counted exactly
   (border windows, prefix tokens), converted to MACs as vision papers report them (q.k and p.v:
   head_dim MACs each per pair and head; FLOPs = 2 x MACs), next to the paper's expression;
2. the FLOPs that `torch.utils.flop_counter.FlopCounterMode` counts on the real layers (logo_attn ops
   for LOGO, SDPA for the others, see `benchmarks.schemes`), split into attention and projections,
   each compared with its analytic value: the script says MISMATCH when they differ;
3. measured time forward and forward+backward and peak memory on the device at hand;
4. log-log slopes of cost and time against N = F*H*W along each family of grids (window fixed), and
   where along each family LOGO becomes cheaper or dearer than divided attention (exact pairs);
5. CSV/JSON (with device, versions, commit) and PNG plots under benchmarks/results/, a table at the end;
6. the GMACs and parameters of LOGOFormer and the same skeleton with divided, full and spatial-only
   attention for 16 x 3 x 112 x 112 clips next to the paper's Table 2 (`benchmarks.bench_model`).

Attention cost is what the paper's formulas describe; the layers also spend MACs in their linear
projections (reported separately, never mixed into the attention columns), and norms, softmax and
pooling are not counted (FlopCounterMode does not count them either).

    python benchmarks/flops_vs_timesformer.py --quick          # ~1-2 minutes on a 2-core CPU
    python benchmarks/flops_vs_timesformer.py                  # the whole sweep
    python benchmarks/flops_vs_timesformer.py --device cuda --dtype bfloat16 --batch 8
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `logo_attn` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks import bench_model, schemes
from benchmarks.cli import check_device, convert, positive_float, positive_int, triple
from benchmarks.counting import count_flops
from benchmarks.environment import ROOT, device_tag, start_run
from benchmarks.results import fmt, table, write_results
from benchmarks.timing import measure_many, peak_memory
from logo_attn import backends
from logo_attn.flops import SCHEMES, attention_macs, attention_pairs, paper_attention_pairs
from logo_attn.geometry import clip_window

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODEL_GRID, MODEL_WINDOW = (16, 7, 7), (2, 7, 7)  # LOGOFormer's defaults: 16 frames of 112x112 -> 16x7x7


@dataclass(frozen=True)
class Family:
    """Grids along which one axis grows with the rest fixed; slopes and crossovers are taken along it."""

    name: str
    label: str
    axis: str  # "frames" or "size"
    fixed: int

    def grid(self, value: int) -> tuple[int, int, int]:
        return (value, self.fixed, self.fixed) if self.axis == "frames" else (self.fixed, value, value)

    def values(self, args) -> list[int]:
        return args.frames if self.axis == "frames" else args.sizes


FAMILIES = (
    Family("space", "F=16, H=W growing", "size", 16),
    Family("time7", "H=W=7, F growing", "frames", 7),
    Family("time14", "H=W=14, F growing", "frames", 14),
)

FULL = dict(frames=[4, 8, 16, 32, 64], sizes=[4, 7, 14, 21, 28], windows=["2x7x7", "4x7x7", "2x4x4"],
            families=[f.name for f in FAMILIES])
QUICK = dict(frames=[4, 16, 32], sizes=[4, 7, 14], windows=["2x7x7"], families=[f.name for f in FAMILIES])
# fwd+bwd GFLOP per timed call above which a point is left untimed (reported as such), per device type
MAX_GFLOP = {"cpu": 100.0, "cuda": 1e6}
MAX_GFLOP_QUICK = {"cpu": 15.0, "cuda": 1e5}


# --------------------------------------------------------------------------------------------------
# Analytic and counted cost
# --------------------------------------------------------------------------------------------------


def scheme_cost(scheme: str, grid, window, args) -> dict:
    """One row of analytic and counted cost for one clip (batch 1); `window` as asked, clipped to the grid here."""
    asked, window = window, clip_window(grid, window) if window else None
    pairs = attention_pairs(scheme, grid, window, args.prefix)
    attn = attention_macs(pairs, args.dim)
    proj = schemes.projection_macs(scheme, grid, window, args.dim, args.prefix)
    paper = paper_attention_pairs(scheme, grid, asked)  # the paper's expression knows no clipping or borders
    counted = counted_flops(scheme, grid, window, args)
    match = counted["attention"] == 2 * attn and counted["projection"] == 2 * proj and counted["other"] == 0
    return dict(
        scheme=scheme, window="x".join(map(str, asked)) if asked else None,
        clipped_window="x".join(map(str, window)) if window else None, grid="x".join(map(str, grid)),
        tokens=math.prod(grid), prefix=args.prefix, dim=args.dim, heads=args.heads,
        pairs=pairs, paper_pairs=paper, attention_gmacs=attn / 1e9, paper_attention_gmacs=2 * args.dim * paper / 1e9,
        projection_gmacs=proj / 1e9, layer_gmacs=(attn + proj) / 1e9,
        counted_attention_flops=counted["attention"], counted_projection_flops=counted["projection"],
        counted_other_flops=counted["other"], counted_equals_analytic=match,
    )


def counted_flops(scheme: str, grid, window, args) -> dict[str, int]:
    def run():
        with torch.device("meta"):
            layer = schemes.build(scheme, args.dim, args.heads, window, args.prefix, backend="torch")
            x = torch.empty(1, args.prefix + math.prod(grid), args.dim)
        return layer(x, grid)

    return count_flops(run)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def layer_calls(scheme: str, grid, window, args, device, dtype):
    """(fwd, fwdbwd) callables of one scheme's layer on a batch of `args.batch` clips."""
    torch.manual_seed(args.seed)
    window = clip_window(grid, window) if window else None
    layer = schemes.build(scheme, args.dim, args.heads, window, args.prefix, backend=args.backend).to(device, dtype)
    x = torch.randn(args.batch, args.prefix + math.prod(grid), args.dim, device=device, dtype=dtype, requires_grad=True)
    leaves = [x, *layer.parameters()]
    dout = torch.randn_like(x)

    def fwd():
        return layer(x, grid)

    def fwdbwd():
        return torch.autograd.grad(layer(x, grid), leaves, dout)

    return fwd, fwdbwd


def time_grid(points, args, device, dtype) -> list[dict]:
    """fwd and fwd+bwd times (ms, median and p20/p80) and fwd+bwd peak memory of the schemes of one grid.

    On CPU the schemes are timed in alternating rounds (`benchmarks.timing.measure_many`), so a change
    in the machine's load hits them alike, and the memory run doubles as the warm-up; on CUDA memory
    is measured last, so that compilation and autotuning buffers of first calls stay out of it.
    """
    calls = [layer_calls(scheme, grid, window, args, device, dtype) for scheme, grid, window in points]
    results = [{} for _ in points]

    def memory():
        for result, (_, fwdbwd) in zip(results, calls):
            result["fwdbwd_peak_mib"] = peak_memory(fwdbwd, device) / 2**20

    if device.type == "cpu":
        memory()
    for index, mode in enumerate(("fwd", "fwdbwd")):
        timings = measure_many([c[index] for c in calls], device, threads=args.threads,
                               min_run_time=args.min_run_time, min_samples=3, warmup=0)
        for result, timing in zip(results, timings):
            result.update({f"{mode}_ms": timing.median * 1e3, f"{mode}_p20_ms": timing.p20 * 1e3,
                           f"{mode}_p80_ms": timing.p80 * 1e3})
    if device.type == "cuda":
        memory()
    return results


def timed_gflop(row: dict, batch: int) -> float:
    """Analytic fwd+bwd GFLOP of one timed call: 2 FLOPs per MAC; backward ~2x (projections) and 2.5x (attention)."""
    return 2 * batch * (3.5 * row["attention_gmacs"] + 3 * row["projection_gmacs"])


# --------------------------------------------------------------------------------------------------
# Slopes and crossovers
# --------------------------------------------------------------------------------------------------


def slope(tokens: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(tokens); None with fewer than two points."""
    points = [(n, v) for n, v in zip(tokens, values) if v and v > 0]
    if len(points) < 2:
        return None
    n, v = np.log(np.array(points, dtype=float)).T
    return float(np.polyfit(n, v, 1)[0])


def relation(logo: int, divided: int) -> str:
    return "cheaper" if logo < divided else "equal" if logo == divided else "dearer"


def crossovers(family: Family, window, prefix: int, limit: int) -> list[dict]:
    """Where along `family` (its axis from 1 to `limit`) LOGO's exact pairs become cheaper than, equal to or
    dearer than divided attention's; the first entry is the relation at the start of the family."""
    changes, previous = [], None
    for value in range(1, limit + 1):
        grid = family.grid(value)
        now = relation(attention_pairs("logo", grid, clip_window(grid, window), prefix),
                       attention_pairs("divided", grid, None, prefix))
        if now != previous:
            changes.append(dict(family=family.name, window="x".join(map(str, window)), grid="x".join(map(str, grid)),
                                tokens=math.prod(grid), logo_is=now))
        previous = now
    return changes


def describe_crossovers(found: Sequence[dict]) -> str:
    """'dearer at 16x1x1; cheaper from 16x10x10 (N=1600)', eliding the middle of long alternations."""
    parts = [f"{c['logo_is']} {'at' if i == 0 else 'from'} {c['grid']} (N={c['tokens']})" for i, c in enumerate(found)]
    if len(parts) > 5:  # border windows along an axis the window does not divide make the relation alternate
        parts = parts[:3] + [f"... {len(parts) - 5} more changes (border windows) ..."] + parts[-2:]
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------

COLORS = {"full": "tab:red", "divided": "tab:blue", "spatial": "tab:green"}
LOGO_COLORS = ("tab:purple", "tab:orange", "tab:brown", "tab:olive")


def _series(rows, family: Family, args, scheme: str, window: str | None, key: str):
    grids = {"x".join(map(str, family.grid(v))) for v in family.values(args)}
    picked = sorted((r["tokens"], r.get(key)) for r in rows
                    if r["scheme"] == scheme and r["window"] == window and r["grid"] in grids)
    return [n for n, _ in picked], [v for _, v in picked]


def _lines(args):
    yield "full", None, COLORS["full"], "full"
    yield "divided", None, COLORS["divided"], "divided (TimeSformer)"
    yield "spatial", None, COLORS["spatial"], "spatial-only"
    for color, window in zip(LOGO_COLORS, args.windows):
        yield "logo", "x".join(map(str, window)), color, f"LOGO {'x'.join(map(str, window))}"


def _log_axes(ax, title: str) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set(xscale="log", yscale="log", xlabel="tokens N = F*H*W", title=title)
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
    ax.grid(True, which="both", alpha=0.3)


def plot(rows, args, env, path_prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{env['device']} | torch {env['torch']} | {env['commit']}"
    written = []
    # cost: exact attention MACs (solid, markers) and the paper's expression (dashed)
    families = args.families
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4.2), squeeze=False)
    for ax, family in zip(axes[0], families):
        for scheme, window, color, label in _lines(args):
            n, exact = _series(rows, family, args, scheme, window, "attention_gmacs")
            _, paper = _series(rows, family, args, scheme, window, "paper_attention_gmacs")
            ax.plot(n, exact, "o-", color=color, label=label)
            ax.plot(n, paper, "--", color=color, alpha=0.6)
        _log_axes(ax, family.label)
    axes[0][0].set_ylabel(f"attention GMACs per clip (dim {args.dim})")
    axes[0][-1].legend(fontsize=8, title="solid: exact pairs\ndashed: paper's formula", title_fontsize=8)
    fig.suptitle(f"Attention cost vs tokens\n{title}", fontsize=9)
    fig.tight_layout()
    written.append(path_prefix.with_name(path_prefix.name + "_cost.png"))
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    # time: measured fwd and fwd+bwd
    if args.time:
        fig, axes = plt.subplots(2, len(families), figsize=(5 * len(families), 7.5), squeeze=False)
        for row_axes, mode, mode_label in zip(axes, ("fwd_ms", "fwdbwd_ms"), ("forward", "forward+backward")):
            for ax, family in zip(row_axes, families):
                for scheme, window, color, label in _lines(args):
                    n, ms = _series(rows, family, args, scheme, window, mode)
                    kept = [(a, b) for a, b in zip(n, ms) if b]
                    if kept:
                        ax.plot(*zip(*kept), "o-", color=color, label=label)
                _log_axes(ax, f"{family.label}: {mode_label}")
            row_axes[0].set_ylabel(f"ms (batch {args.batch}, {args.dtype})")
        axes[0][-1].legend(fontsize=8)
        fig.suptitle(f"Measured layer time vs tokens (dim {args.dim}, {args.heads} heads)\n{title}", fontsize=9)
        fig.tight_layout()
        written.append(path_prefix.with_name(path_prefix.name + "_time.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small sweep that runs in about a minute on a CPU")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--backend", default="auto", help="logo_attn backend of the LOGO layer (default auto)")
    parser.add_argument("--dim", type=positive_int, default=256, help="layer width (LOGOFormer's embed_dim)")
    parser.add_argument("--heads", type=positive_int, default=8)
    parser.add_argument("--prefix", type=int, default=0, help="prefix (CLS) tokens; the paper's formulas assume 0")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--frames", type=positive_int, nargs="+", help="F values of the time families")
    parser.add_argument("--sizes", type=positive_int, nargs="+", help="H=W values of the space family")
    parser.add_argument("--windows", nargs="+", help="windows fxhxw (first is the main one)")
    parser.add_argument("--families", nargs="+", choices=[f.name for f in FAMILIES],
                        help="families of grids to sweep (crossovers are always found along all of them)")
    parser.add_argument("--no-time", dest="time", action="store_false", help="cost only, no timing")
    parser.add_argument("--max-gflop", type=positive_float, help="leave points costing more fwd+bwd GFLOP per call untimed")
    parser.add_argument("--min-run-time", type=positive_float, help="seconds of samples per CPU timing")
    # One thread by default: the slope of time against N is about work, and a single thread keeps
    # parallel efficiency (which changes with problem size) and other processes' load (a 2-thread
    # run on a busy 2-core machine measured 4-10x slower than 1 thread) out of it.
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument("--out", type=Path, help="result path prefix (default benchmarks/results/flops_vs_timesformer_<device>[_quick])")
    args = parser.parse_args(argv)
    sweep = QUICK if args.quick else FULL
    args.frames = args.frames or sweep["frames"]
    args.sizes = args.sizes or sweep["sizes"]
    check_device(parser, args.device)
    args.windows = [convert(parser, "--windows", triple, w) for w in (args.windows or sweep["windows"])]
    args.families = [f for f in FAMILIES if f.name in (args.families or sweep["families"])]
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.max_gflop = args.max_gflop or (MAX_GFLOP_QUICK if args.quick else MAX_GFLOP)[args.device]
    args.min_run_time = args.min_run_time or (0.05 if args.quick else 0.5)
    if args.dim % args.heads:
        parser.error(f"--dim {args.dim} must be divisible by --heads {args.heads}")
    return args


def sweep_points(args) -> list[tuple[str, tuple[int, int, int], tuple[int, int, int] | None]]:
    """(scheme, grid, window) of every row: each grid of every family, LOGO once per window."""
    grids = sorted({family.grid(v) for family in args.families for v in family.values(args)}, key=math.prod)
    points = []
    for grid in grids:
        points += [(scheme, grid, None) for scheme in SCHEMES if scheme != "logo"]
        points += [("logo", grid, window) for window in args.windows]
    return points


def progress(items, **kwargs):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, **kwargs)


def main(argv: Sequence[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    env = start_run(device, args.threads)
    logo_backend = backends.choose(args.backend, device.type, dtype, args.dim // args.heads, backends.triton_interpreted())
    print(f"# layers of width {args.dim}, {args.heads} heads, {args.prefix} prefix tokens; LOGO on backend "
          f"{logo_backend!r}; timing batch {args.batch}, {args.dtype}, points above {args.max_gflop:g} GFLOP left untimed",
          flush=True)

    points = sweep_points(args)
    rows = [scheme_cost(scheme, grid, window, args) for scheme, grid, window in points]
    if args.time:
        by_grid: dict[tuple, list[int]] = {}
        for index, (row, (scheme, grid, window)) in enumerate(zip(rows, points)):
            row.update(backend=logo_backend if scheme == "logo" else "sdpa", timed_gflop=timed_gflop(row, args.batch))
            if row["timed_gflop"] > args.max_gflop:
                row["status"] = f"untimed: {row['timed_gflop']:.3g} GFLOP > --max-gflop {args.max_gflop:g}"
            else:
                by_grid.setdefault(grid, []).append(index)
        for indices in progress(list(by_grid.values()), desc="timing", unit="grid"):
            try:
                for index, result in zip(indices, time_grid([points[i] for i in indices], args, device, dtype)):
                    rows[index].update(result, status="ok")
            except torch.OutOfMemoryError as error:
                for index in indices:
                    rows[index]["status"] = f"out of memory: {str(error).splitlines()[0]}"

    slopes = fit_slopes(rows, args)
    crossings = [c for window in args.windows for family in FAMILIES
                 for c in crossovers(family, window, args.prefix, 64 if family.axis == "size" else 256)]
    summary = dict(slopes=slopes, crossovers=crossings, mismatches=[r for r in rows if not r["counted_equals_analytic"]],
                   seconds=None)
    prefix = args.out or ROOT / "benchmarks" / "results" / (
        f"flops_vs_timesformer_{device_tag(device)}" + ("_quick" if args.quick else ""))
    report(rows, summary, args)
    summary["model"] = bench_model.model_table(img_sizes=(112, 224), embed_dims=(args.dim,), heads=args.heads)
    bench_model.print_model_table(summary["model"])
    summary["seconds"] = time.perf_counter() - started
    config = {k: v for k, v in vars(args).items() if k != "out"}
    written = write_results(prefix, env, {**config, "summary": summary}, rows)
    if args.plot:
        try:
            written += plot(rows, args, env, prefix)
        except ImportError as error:  # matplotlib is the `bench` extra, not a dependency of logo_attn
            print(f"no plots: {error} (pip install matplotlib)")
    for path in written:
        print(f"wrote {path}")
    print(f"done in {summary['seconds']:.0f} s")
    return dict(rows=rows, summary=summary, files=written)


def fit_slopes(rows, args) -> list[dict]:
    fits = []
    for family in args.families:
        for scheme, window, _, label in _lines(args):
            entry = dict(family=family.name, scheme=label)
            for key, name in (("attention_gmacs", "cost"), ("layer_gmacs", "layer_cost"), ("fwd_ms", "fwd_time"),
                              ("fwdbwd_ms", "fwdbwd_time")):
                n, values = _series(rows, family, args, scheme, window, key)
                entry[f"{name}_slope"] = slope(n, values)
                entry[f"{name}_tail_slope"] = slope(n[-2:], values[-2:])  # between the two largest grids
            fits.append(entry)
    return fits


def report(rows, summary, args) -> None:
    """The compact tables printed at the end of a run."""
    main_window = "x".join(map(str, args.windows[0]))
    labels = [label for *_, label in _lines(args)]
    keys = [(scheme, window) for scheme, window, *_ in _lines(args)]
    by_key = {(r["scheme"], r["window"], r["grid"]): r for r in rows}
    grids = sorted({r["grid"] for r in rows}, key=lambda g: (math.prod(map(int, g.split("x"))), g))
    for title, key in (("attention GMACs per clip (exact; FLOPs = 2 x MACs)", "attention_gmacs"),
                       ("attended pairs per query token", "pairs_per_token"),
                       (f"forward+backward ms (batch {args.batch}, {args.dtype})", "fwdbwd_ms")):
        if key == "fwdbwd_ms" and not args.time:
            continue
        cells = []
        for grid in grids:
            tokens = math.prod(map(int, grid.split("x")))
            line = [grid, tokens]
            for scheme, window in keys:
                row = by_key[(scheme, window, grid)]
                line.append(row["pairs"] / (tokens + args.prefix) if key == "pairs_per_token" else row.get(key))
            cells.append(line)
        print(f"\n{title}")
        print(table(cells, ["grid", "N", *labels]))

    print("\nlog-log slope against N (whole family / between its two largest grids); layer = attention + projections")
    cells = [[s["family"], s["scheme"]] + [f"{fmt(s[f'{k}_slope'])} / {fmt(s[f'{k}_tail_slope'])}"
                                            for k in ("cost", "layer_cost", "fwd_time", "fwdbwd_time")]
             for s in summary["slopes"]]
    print(table(cells, ["family", "scheme", "attention cost", "layer cost", "fwd time", "fwd+bwd time"]))

    print("\nLOGO's attended pairs against divided attention's along each family (exact, every integer size)")
    for family in FAMILIES:
        for window in args.windows:
            w = "x".join(map(str, window))
            found = [c for c in summary["crossovers"] if c["family"] == family.name and c["window"] == w]
            print(f"  {family.label}, window {w}: LOGO {describe_crossovers(found)}")
    model = by_key.get(("logo", main_window, "x".join(map(str, MODEL_GRID))))
    divided = by_key.get(("divided", None, "x".join(map(str, MODEL_GRID))))
    if model and divided and main_window == "x".join(map(str, MODEL_WINDOW)):
        print(f"  at the model's default grid 16x7x7, window 2x7x7: LOGO {model['pairs']} pairs vs divided "
              f"{divided['pairs']} ({model['pairs'] / divided['pairs']:.2f}x)")

    if summary["mismatches"]:
        print(f"\nMISMATCH: FlopCounterMode's count differs from the analytic one in {len(summary['mismatches'])} rows:")
        for r in summary["mismatches"]:
            print(f"  {r['scheme']} {r['grid']} {r['window']}: counted attention {r['counted_attention_flops']} vs "
                  f"{2e9 * r['attention_gmacs']:.0f}, projections {r['counted_projection_flops']} vs "
                  f"{2e9 * r['projection_gmacs']:.0f}, other {r['counted_other_flops']}")
    else:
        print(f"\nFlopCounterMode's counts equal the analytic FLOPs (attention and projections) in all {len(rows)} rows.")
    untimed = [r for r in rows if r.get("status", "ok") != "ok"]
    if untimed:
        print(f"{len(untimed)} rows untimed (over the --max-gflop budget or out of memory); see the JSON's status.")


if __name__ == "__main__":
    main()
