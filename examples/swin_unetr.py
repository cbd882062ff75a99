"""MONAI's SwinUNETR with its window attention swapped for logo_attn's: the same weights and the same
outputs, without the roll, the window copies and the region mask of the eager code.

    python examples/swin_unetr.py                 # a small CPU run (the test suite runs this)
    python examples/swin_unetr.py --size 96 --feature-size 48 --window 7 --device cuda --dtype bfloat16

Needs MONAI with einops (``pip install "monai[einops]"``, part of logo-attn's test extra).
"""

import argparse
import copy
import math
import time

import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import get_window_size

from logo_attn import backends
from logo_attn.swin import SwinStage3D, swap_monai_attention


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input volume edge (a multiple of 32)")
    parser.add_argument("--feature-size", type=int, default=12, help="SwinUNETR feature_size (a multiple of 12)")
    parser.add_argument("--window", type=int, default=4, help="window edge (MONAI's default is 7)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after one warm-up call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    return parser.parse_args()


def timed(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def stage_grids(encoder: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int, int]]:
    """The token grid each Swin stage of a swapped encoder sees for input x."""
    grids = []
    hooks = [m.register_forward_pre_hook(lambda _, args: grids.append(tuple(args[0].shape[2:])))
             for m in encoder.modules() if isinstance(m, SwinStage3D)]
    with torch.no_grad():
        encoder(x)
    for hook in hooks:
        hook.remove()
    return grids


def region_mask_mib(grid, window) -> float:
    """Size of the (windows, T, T) fp32 region mask MONAI's BasicLayer builds for a stage on every forward."""
    window, _ = get_window_size(grid, window, tuple(w // 2 for w in window))
    windows = math.prod(math.ceil(g / w) for g, w in zip(grid, window))
    tokens = math.prod(window)
    return windows * tokens * tokens * 4 / 2**20


def main() -> None:
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    window = (args.window,) * 3
    model = SwinUNETR(in_channels=1, out_channels=3, feature_size=args.feature_size, window_size=window)
    model = model.to(device, dtype)
    # In place; here on a copy, to compare. Load pretrained weights (load_from) before swapping.
    swapped = swap_monai_attention(copy.deepcopy(model))
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, device=device, dtype=dtype)

    # The swap touches the encoder only (swinViT); its five feature maps feed the decoder.
    with torch.no_grad():
        pairs = list(zip(swapped.swinViT(x), model.swinViT(x)))
    print(f"SwinUNETR {args.size}^3, feature_size {args.feature_size}, window {window}, {dtype}, {device}: "
          f"max |swapped - original| per encoder feature map: "
          + ", ".join(f"{(a - b).abs().max().item():.1e}" for a, b in pairs)
          + f" (max |original| {max(b.abs().max().item() for _, b in pairs):.1e})")

    head_dim = args.feature_size // 3  # SwinUNETR's heads (3, 6, 12, 24) grow with the width
    chosen = backends.choose("auto", device.type, dtype, head_dim, backends.triton_interpreted())
    print(f'backend="auto" runs shifted windows with a bias on: {chosen}'
          + (" (the PyTorch reference: no kernel here takes them yet)" if chosen == "torch" else ""))

    def step(encoder):
        return lambda: sum(o.float().sum() for o in encoder(x)).backward()

    t_monai = timed(step(model.swinViT), args.repeats, device)
    t_ours = timed(step(swapped.swinViT), args.repeats, device)
    print(f"encoder forward+backward: MONAI {t_monai * 1e3:.1f} ms, swapped {t_ours * 1e3:.1f} ms "
          f"({t_monai / t_ours:.2f}x)")

    grids = stage_grids(swapped.swinViT, x)
    masks = [region_mask_mib(grid, window) for grid in grids]
    print("region masks MONAI builds per forward, none after the swap: "
          + ", ".join(f"stage {i + 1} {grid}: {mib:.2f} MiB" for i, (grid, mib) in enumerate(zip(grids, masks))))


if __name__ == "__main__":
    main()
