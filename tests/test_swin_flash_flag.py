"""MONAI's opt-in SDPA window attention (``use_flash_attention=True``, used at inference, without
grad) does not keep a block from being swapped: swap_monai_attention still replaces it, and the
swapped block computes what MONAI's SDPA path computes (float64, a shifted block on a divisible grid)."""

import copy
import math

import torch
from monai.networks.nets.swin_unetr import SwinTransformerBlock, compute_mask, get_window_size

from logo_attn import swap_monai_attention
from logo_attn.swin import SwinBlock3D
from oracle import assert_matches


def test_flash_attention_flag_is_swapped_and_matches_monai_sdpa():
    torch.manual_seed(0)
    block = SwinTransformerBlock(12, 3, (2, 4, 4), (1, 2, 2), use_flash_attention=True).double().eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0.0, 0.5)
    swapped = swap_monai_attention(copy.deepcopy(block))
    assert isinstance(swapped, SwinBlock3D)
    x = torch.randn(2, 4, 8, 8, 12, dtype=torch.float64)
    window, shift = get_window_size(x.shape[1:4], block.window_size, block.shift_size)
    padded = [math.ceil(g / w) * w for g, w in zip(x.shape[1:4], window)]
    with torch.no_grad():  # MONAI takes its SDPA path only without grad
        want = block(x, compute_mask(padded, window, shift, x.device))
        got = swapped(x)
    assert_matches("output", got, want, torch.float64)
