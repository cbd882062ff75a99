"""swap_torchvision_attention against torchvision's own modules (Video Swin's ShiftedWindowAttention3d,
Swin's ShiftedWindowAttention and Swin V2's ShiftedWindowAttentionV2), each holding the same weights.

- One attention module, shifted and not, on divisible grids, grids the window does not divide,
  grids smaller than the window (clipped in 3-D, padded to one window in 2-D), and Video Swin's
  clipped last stage with torchvision's relative_position_index[:n, :n] bias: output and the
  gradients of the input and every parameter, float64 within 1e-10; float32 and bfloat16 by the 2x rule.
- Swin V2 with logit scales at their clamp: torchvision's -100 mask no longer excludes; the swap
  equals torchvision with exact exclusion (its mask made -inf) and differs from torchvision.
- Whole models (a small SwinTransformer3d, Swin V1 and V2): logits and every parameter gradient;
  state_dict round trips both ways; torch.compile of a swapped model.

Runs where torchvision imports (the clients CI stage, .ci/clients.sh); skipped elsewhere.
"""

import math

import pytest
import torch

tv_swin = pytest.importorskip("torchvision.models.swin_transformer",
                              reason="needs torchvision (installed in the clients CI stage, .ci/clients.sh)")
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d, SwinTransformer3d  # noqa: E402

from logo_attn import swap_torchvision_attention  # noqa: E402
from client_checks import (  # noqa: E402
    assert_low_precision, assert_same_function, assert_state_dicts_round_trip, randomize_, swapped_copy,
)

DIM, HEADS = 12, 3
TABLES = ("relative_position_bias_table",)


def attention_3d(window, shift):
    torch.manual_seed(1)
    return randomize_(ShiftedWindowAttention3d(DIM, list(window), list(shift), HEADS).double(), TABLES)


def attention_2d(version, window, shift):
    torch.manual_seed(1)
    cls = tv_swin.ShiftedWindowAttentionV2 if version == 2 else tv_swin.ShiftedWindowAttention
    module = cls(DIM, list(window), list(shift), HEADS).double()
    if version == 2:
        with torch.no_grad():  # per-head scales apart, and the cpb_mlp's output of order 1
            module.logit_scale.copy_(torch.tensor([1.0, 2.0, 3.0]).log().view(HEADS, 1, 1) + math.log(3.0))
            module.cpb_mlp[2].weight.normal_(0.0, 0.5)
        return module
    return randomize_(module, TABLES)


# (grid, window, shift): divisible, non-divisible (zero padding attended), clipped on the leading
# axis, and Video Swin's clipped last stage (window clipped on H and W after a longer T: the
# [:n, :n] bias differs from the true offsets there)
GRIDS_3D = [
    ((4, 6, 6), (2, 3, 3), (1, 1, 1)),
    ((4, 6, 6), (2, 3, 3), (0, 0, 0)),
    ((5, 7, 4), (2, 3, 3), (1, 1, 1)),
    ((3, 7, 5), (4, 3, 3), (2, 1, 1)),
    ((4, 2, 2), (8, 7, 7), (4, 3, 3)),
    ((3, 4, 5), (2, 7, 7), (1, 3, 3)),
]


@pytest.mark.parametrize("grid,window,shift", GRIDS_3D, ids=[f"{g}-{w}-{s}" for g, w, s in GRIDS_3D])
def test_video_swin_attention_float64(grid, window, shift):
    client = attention_3d(window, shift)
    x = torch.randn(2, *grid, DIM, dtype=torch.float64)
    assert_same_function(swapped_copy(client, swap_torchvision_attention), client, x)


def test_video_swin_true_offsets_differ_where_torchvision_slices_the_index():
    """The opt-in real offsets on a clipped last stage: not torchvision's [:n, :n] function there,
    still torchvision's on unclipped grids."""
    client = attention_3d((2, 7, 7), (1, 3, 3))
    ours = swapped_copy(client, swap_torchvision_attention, true_offsets=True)
    x = torch.randn(1, 3, 4, 5, DIM, dtype=torch.float64)
    assert (ours(x) - client(x)).abs().max() > 1e-3
    x = torch.randn(1, 4, 14, 14, DIM, dtype=torch.float64)
    assert_same_function(ours, client, x, backward=False)


# (grid, window, shift) in 2-D: divisible, non-divisible, smaller than the window (torchvision
# pads it to one window and does not shift), smaller on one axis only
GRIDS_2D = [
    ((8, 8), (4, 4), (2, 2)),
    ((8, 8), (4, 4), (0, 0)),
    ((7, 10), (4, 4), (2, 2)),
    ((5, 3), (7, 7), (3, 3)),
    ((5, 16), (7, 7), (3, 3)),
]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("grid,window,shift", GRIDS_2D, ids=[f"{g}-{w}-{s}" for g, w, s in GRIDS_2D])
def test_swin_attention_float64(version, grid, window, shift):
    client = attention_2d(version, window, shift)
    x = torch.randn(2, *grid, DIM, dtype=torch.float64)
    assert_same_function(swapped_copy(client, swap_torchvision_attention), client, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("kind", ["3d", "v1", "v2"])
def test_low_precision(kind, dtype):
    if kind == "3d":
        client, x = attention_3d((2, 3, 3), (1, 1, 1)), torch.randn(2, 5, 7, 4, DIM, dtype=torch.float64)
    else:
        client = attention_2d(int(kind[1]), (4, 4), (2, 2))
        x = torch.randn(2, 7, 10, DIM, dtype=torch.float64)
    assert_low_precision(swapped_copy(client, swap_torchvision_attention), client, x, dtype)


def test_swin_v2_saturated_logit_scale_is_excluded_exactly(monkeypatch):
    """With logit_scale at its clamp (log 100) cosine scores reach 100 + 16: torchvision's -100 on
    the pairs of other regions leaves them real weight. The swap excludes them: it equals
    torchvision with that mask made -inf, and differs from torchvision itself."""
    client = attention_2d(2, (4, 4), (2, 2))
    with torch.no_grad():
        client.logit_scale.fill_(math.log(100.0) + 1.0)  # past the clamp, as a trained scale may be
    ours = swapped_copy(client, swap_torchvision_attention)
    x = torch.randn(2, 8, 8, DIM, dtype=torch.float64)
    assert (ours(x) - client(x)).abs().max() > 1e-3, "the saturated case should show torchvision's -100 mask"

    masked_fill = torch.Tensor.masked_fill

    def exact_exclusion(self, mask, value):
        return masked_fill(self, mask, float("-inf") if value == -100.0 else value)

    monkeypatch.setattr(torch.Tensor, "masked_fill", exact_exclusion)
    assert_same_function(ours, client, x)


# --------------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------------


def video_swin(**kwargs):
    """swin3d_t's architecture, narrower: patch (2, 4, 4), window (8, 7, 7), four stages."""
    torch.manual_seed(2)
    model = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=12, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2],
                              window_size=[8, 7, 7], stochastic_depth_prob=0.0, num_classes=5, **kwargs)
    return randomize_(model.double(), TABLES)


def swin_2d(version, depths=(2, 2, 2)):
    torch.manual_seed(2)
    block = tv_swin.SwinTransformerBlockV2 if version == 2 else tv_swin.SwinTransformerBlock
    downsample = tv_swin.PatchMergingV2 if version == 2 else tv_swin.PatchMerging
    model = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=12, depths=list(depths),
                                    num_heads=[1, 2, 2][: len(depths)],
                                    window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=5, block=block,
                                    downsample_layer=downsample)
    return randomize_(model.double(), TABLES) if version == 1 else model.double()


@pytest.mark.parametrize("clip", [(1, 3, 4, 64, 64), (1, 3, 4, 56, 40)], ids=["4x64x64", "4x56x40"])
def test_video_swin_model_logits_and_every_parameter_gradient(clip):
    """4x64x64: grids (2,16,16) -> (2,2,2), the last stages clipped on H and W after T (torchvision's
    [:n, :n] bias); 4x56x40: grids (2,14,10) -> (2,2,2), non-divisible ones among them."""
    client = video_swin()
    assert_same_function(swapped_copy(client, swap_torchvision_attention), client,
                         torch.randn(clip, dtype=torch.float64))


@pytest.mark.parametrize("version", [1, 2])
def test_swin_model_logits_and_every_parameter_gradient(version):
    """60x44 pixels: grids 15x11 -> 8x6 -> 4x3 (padded, shift dropped where padded to one window)."""
    client = swin_2d(version)
    assert_same_function(swapped_copy(client, swap_torchvision_attention), client,
                         torch.randn(2, 3, 60, 44, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["3d", "v1", "v2"])
def test_state_dict_round_trips(kind):
    make = video_swin if kind == "3d" else (lambda: swin_2d(int(kind[1])))
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64) if kind == "3d" else torch.randn(1, 3, 32, 32, dtype=torch.float64)
    assert_state_dicts_round_trip(make(), swap_torchvision_attention, make, x)


def test_swap_shares_parameters_and_rejects_models_without_attention():
    client = video_swin()
    params = list(client.parameters())
    assert swap_torchvision_attention(client) is client
    assert all(a is b for a, b in zip(params, client.parameters()))
    with pytest.raises(ValueError, match="holds no torchvision Swin window attention"):
        swap_torchvision_attention(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        swap_torchvision_attention(client, backend="no-such-backend")


@pytest.mark.parametrize("kind", ["3d", "v2"])
def test_torch_compile_of_a_swapped_model(kind):
    """Whole models traced without a graph break (fullgraph) through AOT autograd, forward and
    backward; aot_eager rather than inductor: the swap's part is the tracing, and inductor's C++
    compile of every client op would take minutes of the CI stage's budget."""
    if kind == "3d":
        client, x = video_swin().float(), torch.randn(1, 3, 4, 64, 64)
    else:
        client, x = swin_2d(2).float(), torch.randn(2, 3, 60, 44)
    ours = swapped_copy(client, swap_torchvision_attention)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    want, got = client(x), compiled(x)
    assert (got - want).abs().max() <= 2e-5 * max(1.0, want.abs().max().item())
    got.sum().backward()
    assert all(p.grad is not None for p in ours.parameters())
