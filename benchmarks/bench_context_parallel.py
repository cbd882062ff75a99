"""Context parallelism on CPU (gloo): what one clip split along time over R ranks costs per layer.

For each grid and R = 1, 2, 4 spawned processes (each its frames of the clip), one training step
(forward + backward) of a sharded layer: ``LocalGlobalAttention`` gathering the pooled input
(``logo-input``) or K and V (``logo-kv``), and Swin's SW-MSA (``WindowAttention3D`` with a temporal
shift: the neighbour exchange). Per rank:

- bytes sent, counted: the growth of the process's ``wchar`` (``/proc/self/io``, every byte the
  process handed to write()/writev(), which is how gloo's TCP transport sends) over the step, the
  largest over the ranks; only the step runs between the two readings;
- peak memory of the step (allocations above what was held before it, PyTorch's profiler);
- time per step: the slowest rank's, median (20/80 percentiles) over the steps, the ranks released
  together by a barrier before each step.

Beside them, what the usual context-parallel schemes would move for the same grid, from their
algorithms (ring algorithms, each rank's share of the sends, fp32, forward + backward): ring
attention passes every rank's K and V around the ring forward and again, with dK and dV, backward
(3 (R-1)/R N 2C words); all-gather K/V (FlexAttention's context parallel) gathers K and V forward
and reduce-scatters their gradients backward (2 (R-1)/R N 2C words); LOGO's own gather is the same
formula with the M pooled tokens (C or 2C words each) instead of the N tokens.

    python benchmarks/bench_context_parallel.py                       # 64x14x14 and 8x7x7, R = 1 2 4
    python benchmarks/bench_context_parallel.py --grids 16x7x7 --steps 3 --ranks 1 2   # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `logo_attn` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.cli import positive_int, triple
from benchmarks.environment import ROOT, start_run
from benchmarks.results import table, write_results
from benchmarks.timing import peak_memory
from logo_attn import LocalGlobalAttention, WindowAttention3D
from logo_attn.distributed import TimeSharding
from logo_attn.distributed.split import split_frames
from logo_attn.geometry import window_count

LAYERS = ("logo-input", "logo-kv", "sw-msa")
WORD = 4  # fp32 bytes


def written_bytes() -> int:
    """Bytes this process has handed to write() and its kin so far (/proc/self/io wchar)."""
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar line")


def build(layer: str, grid, window, dim: int, heads: int, ranks: int, group):
    """The layer, this rank's input and its step function (forward + backward)."""
    torch.manual_seed(0)
    cp = TimeSharding(group, grid, window, gather="kv" if layer == "logo-kv" else "input") if ranks > 1 else None
    if layer == "sw-msa":
        module = WindowAttention3D(dim, heads, window, tuple(w // 2 for w in window), backend="cpu")
        x = torch.randn(1, *grid, dim)
        x = cp.shard_frames(x) if cp else x
        run = (lambda t: module(t, cp=cp)) if cp else module
    else:
        module = LocalGlobalAttention(dim, heads, window, num_prefix_tokens=1, backend="cpu")
        x = torch.randn(1, 1 + grid[0] * grid[1] * grid[2], dim)
        x = cp.shard(x, prefix=1) if cp else x
        run = (lambda t: module(t, grid, cp=cp)) if cp else (lambda t: module(t, grid))
    x.requires_grad_()

    def step():
        run(x).sum().backward()

    return step


def _worker(rank: int, ranks: int, port: int, config: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(config["threads"])
    dist.init_process_group("gloo", rank=rank, world_size=ranks, timeout=datetime.timedelta(seconds=300))
    rows = []
    for grid in config["grids"]:
        for layer in LAYERS:
            step = build(layer, grid, config["window"], config["dim"], config["heads"], ranks, dist.group.WORLD)
            step()  # warm-up: first-call allocations, gloo's lazy connections
            dist.barrier()
            before = written_bytes()
            step()
            sent = written_bytes() - before
            dist.barrier()
            peak = peak_memory(step, torch.device("cpu"))
            times = []
            for _ in range(config["steps"]):
                dist.barrier()
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            rows.append(dict(grid="x".join(map(str, grid)), layer=layer, ranks=ranks, rank=rank, sent_bytes=sent,
                             peak_bytes=peak, times=times))
    torch.save(rows, f"{out}.{rank}")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quantiles(values):
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return statistics.median(ordered), pick(0.2), pick(0.8)


def ring_bytes(tokens: int, words: int, ranks: int, passes: int) -> int:
    """Each rank's share of the sends of `passes` ring collectives over `tokens` tokens of `words` words."""
    return round(passes * (ranks - 1) / ranks * tokens * words * WORD)


def alternatives(grid, window, dim: int, ranks: int, layer: str) -> dict:
    tokens = grid[0] * grid[1] * grid[2]
    pooled = 1 + window_count(grid, [min(w, g) for w, g in zip(window, grid)])
    ours = {"logo-input": ring_bytes(pooled, dim, ranks, 2), "logo-kv": ring_bytes(pooled, 2 * dim, ranks, 2),
            # a rank with two neighbours sends s_f frames of C words to the previous one and the next
            # one's outputs back, forward and (their gradients) backward; an end rank half of that
            "sw-msa": 2 * min(2, ranks - 1) * (window[0] // 2) * grid[1] * grid[2] * dim * WORD}[layer]
    return dict(ours_min_bytes=ours, ring_attention_bytes=ring_bytes(tokens, 2 * dim, ranks, 3),
                allgather_kv_bytes=ring_bytes(tokens, 2 * dim, ranks, 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=triple, nargs="+", default=[(64, 14, 14), (8, 7, 7)])
    parser.add_argument("--window", type=triple, default=(2, 7, 7))
    parser.add_argument("--dim", type=positive_int, default=128)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--ranks", type=positive_int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=1, help="threads per rank")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_context_parallel_cpu")
    args = parser.parse_args(argv)
    for grid in args.grids:
        for ranks in args.ranks:
            try:  # the split's own check, before any process starts
                split_frames(grid[0], min(args.window[0], grid[0]), ranks)
            except ValueError as error:
                parser.error(f"--grids {'x'.join(map(str, grid))} with --ranks {ranks}: {error}")

    env = start_run(torch.device("cpu"), args.threads)
    config = dict(grids=[tuple(g) for g in args.grids], window=tuple(args.window), dim=args.dim, heads=args.heads,
                  steps=args.steps, threads=args.threads, dtype="float32", batch=1, prefix_tokens=1)
    rows = []
    for ranks in args.ranks:
        out = str(args.out) + f".tmp{ranks}"
        mp.spawn(_worker, args=(ranks, _free_port(), config, out), nprocs=ranks, join=True)
        per_rank = [torch.load(f"{out}.{r}") for r in range(ranks)]
        for r in range(ranks):
            os.remove(f"{out}.{r}")
        for cells in zip(*per_rank):
            first = cells[0]
            grid = tuple(int(g) for g in first["grid"].split("x"))
            slowest = [max(c["times"][i] for c in cells) for i in range(len(first["times"]))]
            median, p20, p80 = _quantiles(slowest)
            rows.append(dict(grid=first["grid"], layer=first["layer"], ranks=ranks,
                             sent_bytes=max(c["sent_bytes"] for c in cells),
                             peak_mb=max(c["peak_bytes"] for c in cells) / 2**20,
                             step_ms=1e3 * median, step_ms_p20=1e3 * p20, step_ms_p80=1e3 * p80,
                             **alternatives(grid, args.window, args.dim, ranks, first["layer"])))
    rows.sort(key=lambda r: (r["grid"], r["layer"], r["ranks"]))
    headers = ["grid", "layer", "R", "sent/rank (counted)", "min for ours", "ring attn", "all-gather K/V",
               "peak MiB/rank", "step ms (p20-p80)"]
    print(table([[r["grid"], r["layer"], r["ranks"], r["sent_bytes"], r["ours_min_bytes"], r["ring_attention_bytes"],
                  r["allgather_kv_bytes"], r["peak_mb"], f"{r['step_ms']:.0f} ({r['step_ms_p20']:.0f}-{r['step_ms_p80']:.0f})"]
                 for r in rows], headers))
    for path in write_results(args.out, env, config, rows):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
