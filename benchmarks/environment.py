"""What a result was measured on: device, driver, versions, commit, threads, and the device's roofline.

Every result file carries `environment()` and every run prints `header_line()` first, so a number
can always be traced to the machine and the code that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Roofline:
    """Ceilings of one device: memory bandwidth in bytes/s, dense bf16/fp16 matrix rate in FLOP/s and,
    where measured (the CPU), the fp32 one."""

    bandwidth: float
    half_flops: float
    source: str
    fp32_flops: float | None = None

    def flops_for(self, dtype: torch.dtype) -> float | None:
        """The matrix rate that bounds a computation in `dtype` (fp64 has none here)."""
        if dtype in (torch.float16, torch.bfloat16):
            return self.half_flops
        return self.fp32_flops if dtype == torch.float32 else None


# Ceilings measured on the GPU machines this project is lent (not by this repository's scripts: the
# GPU run measures its own with benchmarks/gpu_check.sh): a large device-to-device copy counting bytes
# read + written, and an 8192^3 bf16 matmul on random data. Keyed by a substring of the device name.
ROOFLINES = {
    "H200": Roofline(4.3e12, 788e12, "H200: 4.3 TB/s copy, 788 bf16 TFLOP/s, measured"),
    "H100": Roofline(3.0e12, 790e12, "H100: 3.0 TB/s copy, 790 bf16 TFLOP/s, measured"),
}


def bf16_matrix_size() -> int:
    """1024, or 256 where one 256 x 256 bf16 `torch.mm` shows no bf16 hardware (under 50 GFLOP/s: an
    AVX2-only CPU runs PyTorch's bf16 matmul at ~1 GFLOP/s, 2 s per 1024^3 product), so that the
    measurement takes milliseconds, not a minute, and still measures that fallback's rate."""
    a = torch.randn(256, 256).bfloat16()
    torch.mm(a, a)
    start = time.perf_counter()
    torch.mm(a, a)
    return 1024 if 2 * 256**3 / (time.perf_counter() - start) >= 50e9 else 256


def measure_cpu_limits(threads: int, min_run_time: float = 0.2) -> Roofline:
    """This CPU's ceilings, measured now with `threads` threads (so in the same run, under the same
    load, as the rows they bound): `torch.mm` of 1024 x 1024 matrices in fp32 and in bf16 (FLOP/s;
    bf16 runs on AMX or AVX512-BF16 where oneDNN finds them; see `bf16_matrix_size`), and the copy
    of a 128 MiB buffer into another (bytes read + written per second)."""
    from benchmarks.timing import measure_many

    torch.set_num_threads(threads)
    n, n16, copy_bytes = 1024, bf16_matrix_size(), 128 * 2**20
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32[:n16, :n16].bfloat16(), b32[:n16, :n16].bfloat16()
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    mm32, mm16, copy = measure_many([lambda: torch.mm(a32, b32), lambda: torch.mm(a16, b16), lambda: dst.copy_(src)],
                                    torch.device("cpu"), threads=threads, min_run_time=min_run_time)
    fp32, bf16 = 2 * n**3 / mm32.median, 2 * n16**3 / mm16.median
    bandwidth = 2 * copy_bytes / copy.median
    source = (f"measured in this run, {threads} threads: torch.mm fp32 {fp32 / 1e9:.0f} GFLOP/s, bf16 "
              f"{bf16 / 1e9:.0f} GFLOP/s{'' if n16 == n else f' (at {n16}^3)'}, copy {bandwidth / 1e9:.1f} GB/s")
    return Roofline(bandwidth, bf16, source, fp32_flops=fp32)


def roofline_for(device_name: str) -> Roofline | None:
    for key, roof in ROOFLINES.items():
        if key in device_name:
            return roof
    return None


def commit() -> str:
    """HEAD's short hash, with '+dirty' when tracked files differ from it; outside git (a copy of the
    tree on a GPU machine) the LOGO_ATTN_COMMIT environment variable, else 'unknown'."""
    outside = os.environ.get("LOGO_ATTN_COMMIT", "unknown")
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return outside
    return head + ("+dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {processor} ({os.cpu_count()} logical cores)"


def _driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001  (a broken optional install must not stop a benchmark)
        return None


def environment(device: torch.device, threads: int | None = None) -> dict:
    """Machine-readable description of where and with what a benchmark ran."""
    import logo_attn

    env = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "driver": _driver() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "logo_attn": logo_attn.__version__,
        "commit": commit(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        # other processes compete for the cores on shared machines: CPU timings mean little under load
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "backends": {name: status.reason for name, status in logo_attn.available_backends().items()},
    }
    roof = roofline_for(env["device"])
    env["roofline"] = roof.source if roof else None
    if device.type == "cpu":
        env["cpu_kernels"] = cpu_kernel_features()
    return env


def cpu_kernel_features() -> dict | None:
    """What the C++ CPU kernels run on here (`logo_attn._C.cpu_features()`: the ISA, and where bf16/fp16
    local attention's products run), or None without the extension."""
    try:
        from logo_attn import _C
    except ImportError:
        return None
    return _C.cpu_features()


def start_run(device: torch.device, threads: int) -> dict:
    """What every benchmark script does first: fix the CPU thread count, describe the environment
    and print its header line; returns the description for the result files."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
    env = environment(device, threads if device.type == "cpu" else None)
    print(header_line(env), flush=True)
    return env


def header_line(env: dict) -> str:
    driver = f" driver {env['driver']}" if env.get("driver") else ""
    kernels = env.get("cpu_kernels")
    if kernels:
        driver += f" | C++ kernels {kernels['isa']}, bf16/fp16 local products on {kernels['bf16_gemm']}/{kernels['fp16_gemm']}"
    return (
        f"# {env['device']}{driver} | torch {env['torch']} | triton {env['triton']} | "
        f"logo_attn {env['logo_attn']} @ {env['commit']} | {env['threads']} threads | "
        f"load {env['load_average_1min']}"
    )


def device_tag(device: torch.device) -> str:
    """Short file-name tag for results: 'cpu' or the GPU's name in lower case, e.g. 'nvidia-h100-80gb-hbm3'."""
    if device.type != "cuda":
        return "cpu"
    return "".join(c if c.isalnum() else "-" for c in device_name(device).lower()).strip("-")
