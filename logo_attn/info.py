"""`python -m logo_attn.info`: versions, devices and which backends this install can run, and why not."""

import platform

import torch

from . import __version__, available_backends
from ._extension import cuda_archs, describe_archs, read_record
from .backends import AUTO_ORDER, device_capability


def report() -> str:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    gpu = "none visible"
    if torch.cuda.is_available():
        major, minor = device_capability(torch.cuda.current_device())
        gpu = f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"
    record = read_record() or {}
    cuda_kernels = (f"compiled for {describe_archs(cuda_archs(record))} (LOGO_ATTN_CUDA_ARCHS chooses them at build time)"
                    if record.get("cuda_kernels") else f"not built ({record.get('cuda_reason') or 'no build record'})")
    try:
        from . import _C

        cpu_isa = _C.cpu_isa()
    except ImportError:
        cpu_isa = "C++ extension not built"
    lines = [
        f"logo_attn {__version__}",
        f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}",
        f"GPU: {gpu}",
        f"CPU kernels: {cpu_isa} (LOGO_ATTN_CPU_ISA forces a lower level)",
        f"CUDA kernels: {cuda_kernels}",
        "",
        "backends:",
    ]
    for name, status in available_backends().items():
        mark = "yes" if status.available else "no "
        lines.append(f"  {name:<7} {mark}  {status.reason}")
    lines.append("")
    lines.append('backend="auto" tries, in order: ' + "; ".join(f"{dev} tensors: {', '.join(order)}" for dev, order in AUTO_ORDER.items()))
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
