"""logo_attn.swin against MONAI (a test extra) and against the masked dense reference.

- The index mapping: MONAI's relative_position_index and `bias_table_view` against offsets built
  here from token coordinates.
- MONAI's WindowAttention (inside its block's roll / partition / region-mask path) and
  SwinTransformerBlock, 3-D, shifted and not, against ours holding the same weights: forward and the
  gradients of the input and of every parameter, float64, on grids where the semantics agree
  (divisible grids; non-divisible ones with zero_pad=True; windows clipped on the leading axis).
- Windows clipped to a smaller grid: by default ours equals MONAI there too (its [:n, :n] bias slice
  passed as the op's dense bias); with true_offsets=True ours warns where that slice is not the real
  offsets, and equals the dense reference with the tokens' real offsets.
- A SwinUNETR with swapped attention against the original, forward and backward.
- Our own float64 tests of shift and bias on non-divisible grids against tests/dense_reference.py.
"""

import copy
import math
import subprocess
import sys
import warnings

import pytest
import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformerBlock, compute_mask, get_window_size

from logo_attn import backends
from logo_attn.geometry import clip_shift, clip_window
from logo_attn.swin import (
    SwinBlock3D, SwinStage3D, WindowAttention3D, bias_table_view, monai_bias_differs, swap_monai_attention,
)
from dense_reference import coordinates, dense_local_attention
from oracle import assert_matches

BACKENDS = ["torch", "auto"]  # "auto" is whichever kernel this machine runs shifted windows with
DIM, HEADS = 12, 3


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Parameters of order 1 (the bias table included, which Swin initialises at std 0.02), so that
    every term of the output and of every gradient is visible in the comparison."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module


def monai_block(window, shift, **kwargs) -> SwinTransformerBlock:
    return randomize(SwinTransformerBlock(DIM, HEADS, window, shift, **kwargs).double())


def monai_block_forward(block, x):
    """What MONAI's BasicLayer does around one block: the region mask of the padded grid, then the block."""
    grid = x.shape[1:4]
    window, shift = get_window_size(grid, block.window_size, block.shift_size)
    padded = [math.ceil(g / w) * w for g, w in zip(grid, window)]
    return block(x, compute_mask(padded, window, shift, x.device))


def compare(ours, theirs, inputs_ours, inputs_theirs, names, dtype=torch.float64):
    """Outputs, then the gradients of every input under one random cotangent."""
    assert_matches("output", ours, theirs, dtype)
    dout = torch.randn_like(theirs)
    got = torch.autograd.grad(ours, inputs_ours, dout)
    want = torch.autograd.grad(theirs, inputs_theirs, dout)
    for name, g, w in zip(names, got, want):
        assert_matches(f"grad of {name}", g, w, dtype)


def compare_modules(ours, theirs, run_ours, run_theirs, x):
    """Forward and the gradients of x and of every parameter (matched by name) of two modules."""
    names = [name for name, _ in theirs.named_parameters()]
    assert names == [name for name, _ in ours.named_parameters()]
    x_ours, x_theirs = (x.detach().clone().requires_grad_(True) for _ in range(2))
    compare(run_ours(x_ours), run_theirs(x_theirs), [x_ours, *ours.parameters()], [x_theirs, *theirs.parameters()],
            ["x", *names])


# --------------------------------------------------------------------------------------------------
# The bias table: MONAI's layout and index against offsets built from coordinates
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [(2, 3, 4), (7, 7, 7), (1, 2, 5), (4, 2, 2)])
def test_monai_index_is_the_offset_index_and_the_table_view_follows_it(window):
    attn = SwinTransformerBlock(DIM, HEADS, window, (0, 0, 0)).attn
    t, y, x = coordinates(window)  # slots of one window, row-major, as MONAI numbers them
    f, h, w = window
    # flat index of the offset query - key in the (2f-1, 2h-1, 2w-1) box, row-major
    dt, dy, dx = (c[:, None] - c[None, :] for c in (t, y, x))
    offset_index = ((dt + f - 1) * (2 * h - 1) + dy + h - 1) * (2 * w - 1) + dx + w - 1
    assert torch.equal(attn.relative_position_index, offset_index)

    table = torch.randn_like(attn.relative_position_bias_table)
    view = bias_table_view(table, window)
    assert view.shape == (HEADS, 2 * f - 1, 2 * h - 1, 2 * w - 1)
    per_pair = view[:, dt + f - 1, dy + h - 1, dx + w - 1]
    monai_per_pair = table[attn.relative_position_index.reshape(-1)].reshape(len(t), len(t), HEADS).permute(2, 0, 1)
    assert torch.equal(per_pair, monai_per_pair)


def test_state_dicts_load_both_ways_without_mapping():
    theirs = monai_block((2, 3, 4), (0, 0, 0)).attn
    ours = WindowAttention3D(DIM, HEADS, (2, 3, 4)).double()
    ours.load_state_dict(theirs.state_dict())  # strict
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name
    back = SwinTransformerBlock(DIM, HEADS, (2, 3, 4), (0, 0, 0)).attn.double()
    back.load_state_dict(randomize(ours).state_dict())
    assert all(torch.equal(back.state_dict()[n], t) for n, t in ours.state_dict().items())


# --------------------------------------------------------------------------------------------------
# MONAI's WindowAttention and SwinTransformerBlock against ours, same weights, float64
# --------------------------------------------------------------------------------------------------

# grid, window, shift, zero_pad: where MONAI and we compute the same function
AGREE = [
    pytest.param((4, 6, 6), (2, 3, 3), (0, 0, 0), False, id="divisible"),
    pytest.param((4, 6, 8), (2, 3, 4), (1, 1, 2), False, id="divisible-shifted"),
    pytest.param((4, 4, 4), (2, 2, 2), (1, 1, 1), False, id="divisible-shift-half-window"),
    pytest.param((2, 6, 4), (4, 3, 2), (2, 1, 1), False, id="leading-axis-clipped"),
    pytest.param((5, 7, 6), (2, 3, 4), (1, 1, 2), True, id="non-divisible-zero-padded-shifted"),
    pytest.param((3, 5, 4), (2, 2, 3), (0, 0, 0), True, id="non-divisible-zero-padded"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid,window,shift,zero_pad", AGREE)
def test_window_attention_equals_monai(backend, grid, window, shift, zero_pad):
    """MONAI's attention path (pad, roll, partition, WindowAttention with its region mask, reverse,
    roll back, crop), i.e. its block's forward_part1 without the norm, against WindowAttention3D."""
    block = monai_block(window, shift)
    block.norm1 = torch.nn.Identity()
    ours = WindowAttention3D(DIM, HEADS, window, shift, zero_pad=zero_pad, backend=backend).double()
    ours.load_state_dict(block.attn.state_dict())
    x = torch.randn(2, *grid, DIM, dtype=torch.float64)
    window_c, shift_c = get_window_size(grid, window, shift)
    mask = compute_mask([math.ceil(g / w) * w for g, w in zip(grid, window_c)], window_c, shift_c, "cpu")
    compare_modules(ours, block.attn, ours, lambda t: block.forward_part1(t, mask), x)


@pytest.mark.parametrize("grid,window,shift,zero_pad", [AGREE[1], AGREE[4]])
def test_window_attention_on_triton_equals_monai(grid, window, shift, zero_pad):
    """The Triton kernels (on CUDA, else under the interpreter) in float32 against MONAI in float64:
    the fp32 tolerance on the output and the gradients of x and of every parameter."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not backends.triton_interpreted():
        pytest.skip("no GPU and TRITON_INTERPRET is unset: the Triton kernels cannot run")
    block = monai_block(window, shift)
    block.norm1 = torch.nn.Identity()
    ours = WindowAttention3D(DIM, HEADS, window, shift, zero_pad=zero_pad, backend="triton").to(device)
    ours.load_state_dict({name: t.float() for name, t in block.attn.state_dict().items()})
    x = torch.randn(2, *grid, DIM, dtype=torch.float64)
    window_c, shift_c = get_window_size(grid, window, shift)
    mask = compute_mask([math.ceil(g / w) * w for g, w in zip(grid, window_c)], window_c, shift_c, "cpu")
    x_theirs, x_ours = x.clone().requires_grad_(True), x.float().to(device).requires_grad_(True)
    want, got = block.forward_part1(x_theirs, mask), ours(x_ours)
    assert_matches("output", got.cpu(), want, torch.float32)
    dout = torch.randn_like(want)
    names = ["x", *(name for name, _ in block.attn.named_parameters())]
    wants = torch.autograd.grad(want, [x_theirs, *block.attn.parameters()], dout)
    gots = torch.autograd.grad(got, [x_ours, *ours.parameters()], dout.float().to(device))
    for name, g, w in zip(names, gots, wants):
        assert_matches(f"grad of {name}", g.cpu(), w, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_checkpoint", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("grid,window,shift,zero_pad", [AGREE[1], AGREE[3], AGREE[4]])
def test_block_equals_monai(backend, use_checkpoint, grid, window, shift, zero_pad):
    theirs = monai_block(window, shift, use_checkpoint=use_checkpoint)
    ours = SwinBlock3D.from_monai(copy.deepcopy(theirs), zero_pad=zero_pad, backend=backend)
    assert ours.use_checkpoint == use_checkpoint and ours.attn.shift_size == shift
    x = torch.randn(2, *grid, DIM, dtype=torch.float64)
    compare_modules(ours, theirs, ours, lambda t: monai_block_forward(theirs, t), x)


@pytest.mark.parametrize("grid,window", [((3, 5, 4), (2, 2, 3)), ((5, 7, 6), (2, 3, 4))])
def test_without_zero_pad_border_windows_differ_from_monai(grid, window):
    """The documented difference: MONAI's border windows also attend the zero padding."""
    theirs = monai_block(window, (0, 0, 0))
    ours = SwinBlock3D.from_monai(copy.deepcopy(theirs), zero_pad=False)
    x = torch.randn(1, *grid, DIM, dtype=torch.float64)
    assert (ours(x) - monai_block_forward(theirs, x)).abs().max() > 1e-3


CLIPPED = [
    ((2, 6, 4), (4, 3, 2), False),  # leading axis clipped: MONAI's slice is the real offsets
    ((1, 2, 5), (4, 3, 5), False),  # clipped axes after length-1 clipped axes only
    ((6, 2, 6), (7, 3, 7), True),   # clipped on every axis (SwinUNETR's last stage at 96^3)
    ((4, 2, 4), (4, 3, 4), True),   # a middle axis clipped after a full leading axis
    ((6, 6, 6), (7, 7, 7), True),   # the 96^3 SwinUNETR's last stage itself (window 7 on 6^3 tokens)
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid,window,differs", CLIPPED)
def test_clipped_windows_equal_monai_by_default(backend, grid, window, differs):
    """By default a clipped window gets MONAI's relative_position_index[:n, :n] bias (the op's dense
    bias): the block equals MONAI's, forward and every gradient, and nothing warns."""
    assert monai_bias_differs(grid, window) == differs
    theirs = monai_block(window, (0, 0, 0))
    ours = SwinBlock3D.from_monai(copy.deepcopy(theirs), backend=backend)
    x = torch.randn(2, *grid, DIM, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_modules(ours, theirs, ours, lambda t: monai_block_forward(theirs, t), x)


@pytest.mark.parametrize("grid,window,differs", CLIPPED)
def test_clipped_windows_with_true_offsets(grid, window, differs):
    """The opt-in: `monai_bias_differs` says where MONAI's relative_position_index[:n, :n] is not the
    real offsets; there the block warns and differs from MONAI, and it always equals the dense
    reference with the tokens' real offsets."""
    theirs = monai_block(window, (0, 0, 0))
    ours = SwinBlock3D.from_monai(copy.deepcopy(theirs), true_offsets=True)
    x = torch.randn(1, *grid, DIM, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ours(x)
    assert sum("relative_position_index" in str(w.message) for w in caught) == differs
    error = (out - monai_block_forward(theirs, x)).abs().max().item()
    assert error > 1e-3 if differs else error < 1e-10
    attn = ours.attn
    q, k, v = attn.qkv(ours.norm1(x)).reshape(1, -1, 3, HEADS, DIM // HEADS).unbind(2)
    local = dense_local_attention(q, k, v, grid, clip_window(grid, window), (0, 0, 0),
                                  bias_table_view(attn.relative_position_bias_table, window), attn.scale)
    dense = x + attn.proj(local.reshape(x.shape))
    dense = dense + ours.mlp(ours.norm2(dense))
    assert_matches("block output", out, dense, torch.float64)


# --------------------------------------------------------------------------------------------------
# Whole models: SwinTransformer stages and SwinUNETR, swapped against the original
# --------------------------------------------------------------------------------------------------


def small_swin_unetr(dtype):
    """32^3 inputs, patch 2: stages on 16^3, 8^3, 4^3, 2^3 tokens. Window (4, 2, 2) divides every
    stage but the last, where only the leading axis is clipped (4 -> 2): the semantics agree
    everywhere, and blocks 1 of each stage shift by (2, 1, 1) (by (0, 1, 1) on the last stage).
    Group norm: instance norm refuses the 1^3 bottleneck of a 32^3 input."""
    model = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, window_size=(4, 2, 2),
                      norm_name=("group", {"num_groups": 3}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_()
    return model.to(dtype)


def test_swap_keeps_weights_shifts_and_state_dict():
    model = small_swin_unetr(torch.float32)
    params_before = [id(p) for p in model.parameters()]
    state_before = model.state_dict()
    blocks_before = [m for m in model.modules() if isinstance(m, SwinTransformerBlock)]
    assert swap_monai_attention(model) is model
    assert [id(p) for p in model.parameters()] == params_before  # an optimizer built before still applies
    state_after = model.state_dict()
    assert list(state_after) == list(state_before)
    assert all(state_after[n].data_ptr() == t.data_ptr() for n, t in state_before.items())
    blocks = [m for m in model.modules() if isinstance(m, SwinBlock3D)]
    assert [b.attn.shift_size for b in blocks] == [tuple(b.shift_size) for b in blocks_before]
    assert [b.attn.shift_size for b in blocks[:2]] == [(0, 0, 0), (2, 1, 1)]
    assert not any(isinstance(m, (SwinTransformerBlock, BasicLayer)) for m in model.modules())
    assert sum(isinstance(m, SwinStage3D) for m in model.modules()) == 4


def test_swapped_swin_transformer_equals_original_float64():
    """The encoder (the only part the swap touches): its five feature maps and every parameter's gradient."""
    original = small_swin_unetr(torch.float64).swinViT
    swapped = swap_monai_attention(copy.deepcopy(original))
    x = torch.randn(1, 1, 32, 32, 32, dtype=torch.float64)
    names = [name for name, _ in original.named_parameters()]
    outs_swapped, outs_original = swapped(x), original(x)
    for i, (a, b) in enumerate(zip(outs_swapped, outs_original)):
        assert_matches(f"feature map {i}", a, b, torch.float64)
    weights = [torch.randn_like(o) for o in outs_original]

    def loss(outs):
        return sum((w * o).sum() for w, o in zip(weights, outs))

    got = torch.autograd.grad(loss(outs_swapped), list(swapped.parameters()))
    want = torch.autograd.grad(loss(outs_original), list(original.parameters()))
    for name, g, w in zip(names, got, want):
        assert_matches(f"grad of {name}", g, w, torch.float64)


def test_swapped_swin_transformer_with_clipped_stages_equals_original_float64():
    """Window 3 on 32^3 inputs: stages of 16^3 and 4^3 tokens zero-padded to whole windows, and a
    last stage of 2^3 clipped on every axis, where MONAI's [:n, :n] bias slice is not the real
    offsets (the case of the 96^3 SwinUNETR's last stage, smaller). The swap's default computes MONAI's function:
    every feature map within 1e-10 (float64), and every parameter's gradient."""
    model = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, window_size=(3, 3, 3),
                      norm_name=("group", {"num_groups": 3}))
    original = randomize(model.swinViT).double()
    swapped = swap_monai_attention(copy.deepcopy(original))
    x = torch.randn(1, 1, 32, 32, 32, dtype=torch.float64)
    outs_swapped, outs_original = swapped(x), original(x)
    for i, (a, b) in enumerate(zip(outs_swapped, outs_original)):
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item()), f"feature map {i}"
    weights = [torch.randn_like(o) for o in outs_original]
    got = torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, outs_swapped)), list(swapped.parameters()))
    want = torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, outs_original)), list(original.parameters()))
    for (name, _), g, w in zip(original.named_parameters(), got, want):
        assert_matches(f"grad of {name}", g, w, torch.float64)
    opted = swap_monai_attention(copy.deepcopy(original), true_offsets=True)
    with pytest.warns(UserWarning, match="true_offsets=True"):
        assert (opted(x)[-1] - outs_original[-1]).abs().max() > 1e-6


def test_swapped_swin_unetr_equals_original():
    """Forward and backward of the whole network in float64 (about 4 s on 2 cores). Not float32: the
    decoder's LeakyReLUs have a kink at 0, so an activation that float32 rounding moves across it
    changes the gradient at that voxel by O(1), and GroupNorm spreads it; on an AVX2-only AMD EPYC
    the swapped network's float32 gradients differed from MONAI's by 4e-3 (x) with a forward within
    2e-6, while float64 agrees to 5e-15."""
    original = small_swin_unetr(torch.float64)
    swapped = swap_monai_attention(copy.deepcopy(original))
    x = torch.randn(1, 1, 32, 32, 32, dtype=torch.float64)
    x_ours, x_theirs = (x.clone().requires_grad_(True) for _ in range(2))
    names = ["x", *(name for name, _ in original.named_parameters())]
    compare(swapped(x_ours), original(x_theirs), [x_ours, *swapped.parameters()],
            [x_theirs, *original.parameters()], names, torch.float64)


def test_swap_refuses_models_without_3d_swin_blocks():
    with pytest.raises(ValueError, match="no 3-D MONAI SwinTransformerBlock"):
        swap_monai_attention(torch.nn.Linear(4, 4))
    model_2d = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=2)
    with pytest.raises(ValueError, match="no 3-D MONAI SwinTransformerBlock"):
        swap_monai_attention(model_2d)


def test_importing_the_library_does_not_import_monai():
    """MONAI is optional: only swap_monai_attention imports it."""
    code = "import sys, logo_attn, logo_attn.swin; print('monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", out


def test_swap_of_a_lone_block_returns_its_replacement():
    block = monai_block((2, 2, 2), (1, 1, 1))
    swapped = swap_monai_attention(block)
    assert isinstance(swapped, SwinBlock3D) and swapped.norm1 is block.norm1


# --------------------------------------------------------------------------------------------------
# Our own semantics on non-divisible grids: float64 against the masked dense reference
# --------------------------------------------------------------------------------------------------

OWN_CASES = [
    pytest.param((5, 7, 6), (2, 3, 4), (1, 2, 1), id="partial-windows-both-ends"),
    pytest.param((3, 5, 9), (2, 4, 4), (1, 3, 2), id="leading-partial-windows"),
    pytest.param((3, 4, 5), (4, 2, 3), (2, 1, 0), id="clipped-axis-shift-dropped"),
    pytest.param((2, 9, 9), (2, 7, 7), (0, 3, 3), id="98-token-windows"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid,window,shift", OWN_CASES)
def test_window_attention_equals_dense_reference(backend, grid, window, shift):
    ours = randomize(WindowAttention3D(DIM, HEADS, window, shift, backend=backend).double())
    reference = copy.deepcopy(ours)

    def dense(x):
        B = x.shape[0]
        q, k, v = reference.qkv(x).reshape(B, -1, 3, HEADS, DIM // HEADS).unbind(2)
        out = dense_local_attention(q, k, v, grid, clip_window(grid, window), clip_shift(grid, window, shift),
                                    bias_table_view(reference.relative_position_bias_table, window), reference.scale)
        return reference.proj(out.reshape(x.shape))

    compare_modules(ours, reference, ours, dense, torch.randn(2, *grid, DIM, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# Attention dropout, hostile input, argument errors
# --------------------------------------------------------------------------------------------------


def test_attention_dropout_acts_on_probabilities_in_training_only():
    """With attn_drop = 1 every probability is dropped: the attention output is zero and the module
    returns proj's bias; in eval the kernels run without dropout."""
    attn = randomize(WindowAttention3D(DIM, HEADS, (2, 2, 2), (1, 1, 1), attn_drop=1.0).double())
    x = torch.randn(2, 4, 4, 4, DIM, dtype=torch.float64)
    assert torch.equal(attn(x), attn.proj.bias.expand(x.shape))
    attn.eval()
    plain = WindowAttention3D(DIM, HEADS, (2, 2, 2), (1, 1, 1)).double()
    plain.load_state_dict(attn.state_dict())
    assert torch.equal(attn(x), plain(x))


def test_attention_dropout_with_a_kernel_backend_warns():
    with pytest.warns(UserWarning, match="no attention dropout"):
        WindowAttention3D(DIM, HEADS, (2, 2, 2), attn_drop=0.1, backend="cpu")


@pytest.mark.parametrize("zero_pad", [False, True])
def test_empty_batch(zero_pad):
    attn = WindowAttention3D(DIM, HEADS, (2, 3, 3), (1, 1, 1), zero_pad=zero_pad).double()
    x = torch.randn(0, 3, 4, 5, DIM, dtype=torch.float64, requires_grad=True)
    out = attn(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape and attn.qkv.weight.grad.abs().sum() == 0


def test_non_finite_token_stays_in_its_window():
    attn = WindowAttention3D(DIM, HEADS, (2, 2, 2), (1, 1, 1)).double()
    x = torch.randn(1, 4, 4, 4, DIM, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")  # alone in the leading partial window (shift 1 on every axis)
    out = attn(x)
    assert out[0, 0, 0, 0].isnan().all() and out.isnan().sum() == DIM


def test_argument_errors():
    with pytest.raises(ValueError, match="shift_size"):
        WindowAttention3D(DIM, HEADS, (2, 2, 2), (0, 2, 0))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        WindowAttention3D(DIM, 5, (2, 2, 2))
    with pytest.raises(TypeError, match="window_size"):
        WindowAttention3D(DIM, HEADS, (2, 2))
    with pytest.raises(ValueError, match="backend"):
        WindowAttention3D(DIM, HEADS, (2, 2, 2), backend="gpu")
    attn = WindowAttention3D(DIM, HEADS, (2, 2, 2))
    with pytest.raises(ValueError, match=r"x must be \(B, D, H, W, dim=12\)"):
        attn(torch.randn(1, 8, DIM))
    with pytest.raises(ValueError, match=r"x must be \(B, D, H, W, dim=12\)"):
        attn(torch.randn(1, 2, 2, 2, DIM + 1))
