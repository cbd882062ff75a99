"""`python -m logo_attn.info`: versions, devices and which backends this install can run, and why not."""

import platform

import torch

from . import __version__, available_backends
from ._extension import cuda_archs, describe_archs, read_record
from .backends import AUTO_ORDER, device_capability


def cpu_paths(features: dict) -> dict[str, str]:
    """Which instruction path the C++ CPU kernels take for each dtype on this CPU, and why, from
    `_C.cpu_features()`."""
    isa = features["isa"]
    fma = {"avx512": "AVX-512 FMA", "avx2": "AVX2 FMA", "baseline": "SSE2/NEON"}[isa]
    unused = []
    if features["amx_bf16"] and features["bf16_gemm"] != "amx":
        unused.append("AMX-BF16 (PyTorch's brgemm could_pack)")
    if features["avx512_bf16"]:
        unused.append("AVX512-BF16")
    bf16_note = (f"this CPU has {' and '.join(unused)}, which these kernels do not use" if unused
                 else "" if features["amx_bf16"] else "this CPU has neither AMX-BF16 nor AVX512-BF16")
    fp16_note = "" if features["amx_fp16"] else "no AMX-FP16 (a Granite Rapids feature)"

    def path(name: str, gemm: str, unit: str, note: str) -> str:
        text = f"{fma} in fp32 on {name} loads converted to fp32, fp32 accumulation, rounded on store"
        if gemm != "none":
            text = f"local attention: {LOCAL_PRODUCTS[gemm].format(name=name, unit=unit)}; the rest: {text}"
        return f"{text}; {note}" if note else text

    return {
        "float32": f"{fma} in fp32",
        "float64": f"{fma} in fp64 (libm exp)",
        "bfloat16": path("bf16", features["bf16_gemm"], "AMX-BF16", bf16_note),
        "float16": path("fp16", features["fp16_gemm"], "AMX-FP16", fp16_note),
    }


# Where bf16/fp16 local attention's products run, by `cpu_features()`'s bf16_gemm / fp16_gemm.
LOCAL_PRODUCTS = {
    "amx": "{name} products on {unit} (PyTorch's oneDNN brgemm), softmax and sums in fp32",
    "brgemm": "PyTorch's brgemm on row-major {name} operands (LOGO_ATTN_CPU_HALF_GEMM=brgemm, a test mode)",
    "emulated": "a scalar product on AMX's {name} operand layout (LOGO_ATTN_CPU_HALF_GEMM=emulated, a test mode)",
}


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
        paths = cpu_paths(_C.cpu_features())
    except ImportError:
        cpu_isa, paths = "C++ extension not built", {}
    lines = [
        f"logo_attn {__version__}",
        f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}",
        f"GPU: {gpu}",
        f"CPU kernels: {cpu_isa} (LOGO_ATTN_CPU_ISA forces a lower level)",
        *(f"  {dtype:<8} {path}" for dtype, path in paths.items()),
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
