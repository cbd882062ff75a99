"""swap_timm_attention against timm's own blocks (SwinTransformerBlock, SwinTransformerV2Block) and
models, each holding the same weights, timm's eager and fused (SDPA) attention paths both.

- One block, shifted and not, on divisible grids (exact), on grids the window does not divide
  when unshifted (zero padding attended, exact), and where timm's roll-before-pad windows wrap
  (shifted non-divisible grids, always_partition on a grid of one window): the block warns and
  equals timm, because it runs timm's code there. Output and the gradients of the input and every
  parameter in float64 within 1e-10; float32 and bfloat16 by the 2x rule.
- Whole models (small SwinTransformer and SwinTransformerV2, swin_tiny's layout): logits and every
  parameter gradient; state_dict round trips both ways; torch.compile of a swapped model.

Runs where timm imports (the clients CI stage, .ci/clients.sh); skipped elsewhere.
"""

import warnings

import pytest
import torch

timm_swin = pytest.importorskip("timm.models.swin_transformer",
                                reason="needs timm (installed in the clients CI stage, .ci/clients.sh)")
from timm.models import swin_transformer_v2 as timm_swin_v2  # noqa: E402

from logo_attn import swap_timm_attention  # noqa: E402
from logo_attn.swap_timm import cut_windows_match  # noqa: E402
from client_checks import (  # noqa: E402
    assert_low_precision, assert_same_function, assert_state_dicts_round_trip, randomize_, swapped_copy,
)

DIM, HEADS = 12, 3
RANDOMIZED = ("relative_position_bias_table", "q_bias", "v_bias", "cpb_mlp.2.weight", "qkv.bias")


def block(version, resolution, window, shift, fused=False, **kwargs):
    torch.manual_seed(1)
    cls = timm_swin_v2.SwinTransformerV2Block if version == 2 else timm_swin.SwinTransformerBlock
    module = randomize_(cls(DIM, resolution, num_heads=HEADS, window_size=window, shift_size=shift, **kwargs).double(),
                        RANDOMIZED)
    module.attn.fused_attn = fused  # V2 has only the eager path: the attribute is then unused
    return module


# (resolution, window, shift, options): the window clipped by timm to a small resolution, divisible
# grids shifted and not, a non-divisible unshifted grid, always_partition on a divisible grid
EXACT = [
    ((8, 8), 4, 2, {}),
    ((8, 8), 4, 0, {}),
    ((7, 10), 4, 0, {}),
    ((5, 14), 7, 3, {}),
    ((8, 12), 4, 2, {"always_partition": True}),
]


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("resolution,window,shift,options", EXACT, ids=[f"{r}-{w}-{s}-{o}" for r, w, s, o in EXACT])
def test_block_float64(version, fused, resolution, window, shift, options):
    if fused and version == 2:
        pytest.skip("timm's Swin V2 attention has no fused path")
    client = block(version, resolution, window, shift, fused, **options)
    x = torch.randn(2, *resolution, DIM, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact grids do not fall back
        assert_same_function(swapped_copy(client, swap_timm_attention), client, x)


# timm's windows wrap around the edge: rolled before padding, or one window long with a shift
WRAPPED = [
    ((7, 10), 4, 2, {"dynamic_mask": True}),
    ((4, 4), 4, 2, {"always_partition": True}),
    ((5, 8), 7, 3, {"always_partition": True, "dynamic_mask": True}),
]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("resolution,window,shift,options", WRAPPED, ids=[f"{r}-{w}-{s}-{o}" for r, w, s, o in WRAPPED])
def test_wrapped_windows_warn_and_run_timm(version, resolution, window, shift, options):
    client = block(version, resolution, window, shift, **options)
    assert not cut_windows_match(resolution, client.window_size, client.shift_size)
    ours = swapped_copy(client, swap_timm_attention)
    x = torch.randn(2, *resolution, DIM, dtype=torch.float64)
    with pytest.warns(UserWarning, match="wrap around the edge"):
        assert_same_function(ours, client, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("version", [1, 2])
def test_low_precision(version, dtype):
    client = block(version, (8, 8), 4, 2)
    x = torch.randn(2, 8, 8, DIM, dtype=torch.float64)
    assert_low_precision(swapped_copy(client, swap_timm_attention), client, x, dtype)


# --------------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------------


def swin(version, fused=False, depths=(2, 2, 2), img_size=64):
    """swin_tiny's layout, narrower and shallower: 64x64 images, patch 4, window 4, grids 16 -> 8 -> 4
    (the last stage one window: timm clips nothing and drops the shift there)."""
    torch.manual_seed(2)
    cls = timm_swin_v2.SwinTransformerV2 if version == 2 else timm_swin.SwinTransformer
    model = cls(img_size=img_size, window_size=4, embed_dim=12, depths=depths, num_heads=(1, 2, 2)[: len(depths)],
                num_classes=5, drop_path_rate=0.0)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    return randomize_(model.double(), RANDOMIZED)


@pytest.mark.parametrize("version,fused", [(1, False), (1, True), (2, False)], ids=["v1-eager", "v1-fused", "v2"])
def test_model_logits_and_every_parameter_gradient(version, fused):
    client = swin(version, fused)
    assert_same_function(swapped_copy(client, swap_timm_attention), client, torch.randn(2, 3, 64, 64, dtype=torch.float64))


@pytest.mark.parametrize("version", [1, 2])
def test_state_dict_round_trips(version):
    assert_state_dicts_round_trip(swin(version), swap_timm_attention, lambda: swin(version),
                                  torch.randn(1, 3, 64, 64, dtype=torch.float64))


def test_swap_shares_parameters_and_rejects_models_without_blocks():
    client = swin(1)
    params = list(client.parameters())
    assert swap_timm_attention(client) is client
    assert all(a is b for a, b in zip(params, client.parameters()))
    with pytest.raises(ValueError, match="holds no timm Swin block"):
        swap_timm_attention(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        swap_timm_attention(client, backend="no-such-backend")


@pytest.mark.parametrize("version", [1, 2])
def test_torch_compile_of_a_swapped_model(version):
    """Whole models traced without a graph break (fullgraph) through AOT autograd, forward and
    backward (aot_eager: see the torchvision suite's compile test), and one stage through inductor."""
    client = swin(version).float()
    ours = swapped_copy(client, swap_timm_attention)
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    want, got = client(x), compiled(x)
    assert (got - want).abs().max() <= 2e-5 * max(1.0, want.abs().max().item())
    got.sum().backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_inductor_compile_of_a_swapped_stage():
    """One stage (a W-MSA and an SW-MSA block) through the default compiler, forward and backward."""
    client = swin(1, depths=(2,), img_size=32).float()
    ours = torch.compile(swapped_copy(client, swap_timm_attention))
    x = torch.randn(2, 3, 32, 32)
    want, got = client(x), ours(x)
    assert (got - want).abs().max() <= 2e-5 * max(1.0, want.abs().max().item())
    got.sum().backward()
