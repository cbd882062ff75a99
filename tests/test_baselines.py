"""The baseline attention layers (logo_attn/baselines.py) against their definitions: full attention
over an explicit softmax, spatial and divided attention as full attention under explicit masks, and
TimeSformer's CLS treatment against per-frame loops."""

import math

import pytest
import torch

from logo_attn import DividedAttention, FullAttention, SpatialAttention
from logo_attn.baselines import SelfAttention


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=1e-10)


def masked_attention(attn, x, mask):
    """`attn` over all tokens with an explicit mask: the definition the reshaping layers must match."""
    q, k, v = attn.qkv(x).unflatten(-1, (3, attn.num_heads, -1)).permute(2, 0, 3, 1, 4)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.proj(out.transpose(1, 2).flatten(2))


def test_self_attention_against_explicit_softmax():
    attn = SelfAttention(12, 3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    q, k, v = attn.qkv(x).view(2, 5, 3, 3, 4).unbind(2)
    weights = torch.softmax(torch.einsum("bihd,bjhd->bhij", q, k) / 2.0, dim=-1)
    close(attn(x), attn.proj(torch.einsum("bhij,bjhd->bihd", weights, v).reshape(2, 5, 12)))


def test_layers_equal_masked_full_attention_without_prefix():
    grid = (3, 4, 5)
    t, y, x_ = torch.tensor([(a, b, c) for a in range(3) for b in range(4) for c in range(5)]).T
    same_frame = t[:, None] == t[None, :]
    same_place = (y[:, None] == y[None, :]) & (x_[:, None] == x_[None, :])
    x = torch.randn(2, math.prod(grid), 16, dtype=torch.float64)

    full = FullAttention(16, 2).double()
    close(full(x, grid), x + full.attn(full.norm(x)))
    spatial = SpatialAttention(16, 2).double()
    close(spatial(x, grid), x + masked_attention(spatial.attn, spatial.norm(x), same_frame))
    divided = DividedAttention(16, 2).double()
    y_ = x + masked_attention(divided.temporal_attn, divided.temporal_norm(x), same_place)
    close(divided(x, grid), y_ + masked_attention(divided.spatial.attn, divided.spatial.norm(y_), same_frame))


def test_divided_with_cls_against_per_position_and_per_frame_loops():
    """Temporal attention per spatial position (CLS skips it), then spatial attention per frame with
    its own copy of CLS, whose F outputs are averaged (TimeSformer)."""
    layer = DividedAttention(8, 2, num_prefix_tokens=1).double()
    Fg, Hg, Wg, D = 3, 2, 2, 8
    x = torch.randn(2, 1 + Fg * Hg * Wg, D, dtype=torch.float64)
    grid_tokens = x[:, 1:].view(2, Fg, Hg * Wg, D)
    temporal = grid_tokens.clone()
    for s in range(Hg * Wg):
        seq = grid_tokens[:, :, s]
        temporal[:, :, s] = seq + layer.temporal_attn(layer.temporal_norm(seq))
    spatial, cls_updates = temporal.clone(), []
    for t in range(Fg):
        seq = torch.cat([x[:, :1], temporal[:, t]], dim=1)
        out = layer.spatial.attn(layer.spatial.norm(seq))
        spatial[:, t] = temporal[:, t] + out[:, 1:]
        cls_updates.append(out[:, :1])
    expected = torch.cat([x[:, :1] + torch.stack(cls_updates).mean(0), spatial.reshape(2, -1, D)], dim=1)
    close(layer(x, (Fg, Hg, Wg)), expected)


@pytest.mark.parametrize("layer", [FullAttention, SpatialAttention, DividedAttention])
def test_wrong_input_names_the_expected_shape(layer):
    module = layer(16, 2, num_prefix_tokens=1)
    with pytest.raises(ValueError, match=rf"{layer.__name__}: x must be \(B, num_prefix_tokens \+ F\*H\*W, dim\) = "
                                         r"\(B, 25, 16\) for grid \(2, 3, 4\), got shape \(1, 24, 16\)"):
        module(torch.randn(1, 24, 16), (2, 3, 4))
