"""Property-based tests (Hypothesis): the three ops and the layer on every backend that runs here,
forward and every gradient, on random shapes the example-based suites do not enumerate: the ops
against float64 definitions written independently of logo_attn.reference (dense masked attention,
plain softmax attention, index_add means), the layer against itself in float64 on that reference.

Drawn: grids of 1..3 frames of 1..20 x 1..20 (axes of 1 included), windows smaller than, equal to
or larger than the grid on each axis, shifts, a relative-position bias table (contiguous, or Swin's
heads-last parameter seen through a permute), the 6-D input form, head dims 1..40, 64, 70 and 128,
float32 (and float64 where the backend computes it), and inputs in every storage the ops promise to
read in place: contiguous, views of one packed projection, heads-first storage, a stride-2 last
axis, and expanded (stride-0) batch or head axes, with an output gradient that may itself be
expanded (what `.sum()` gives). Every torch.empty* is NaN-filled (conftest's `poison_empty`), so an
output element a kernel never writes fails. The example budget comes from the profile
tests/conftest.py loads (`ci` under CI: fixed and derandomized); Triton, run by its interpreter
here, gets a fifth of it, on local-attention grids of at most 10 x 10.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="Hypothesis is not installed (pip install hypothesis)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import logo_attn  # noqa: E402
from dense_reference import dense_local_attention  # noqa: E402
from logo_attn.geometry import bias_table_shape, clip_shift, clip_window  # noqa: E402
from oracle import assert_matches, backend_params, dtypes_for, require  # noqa: E402



def dtypes(backend: str, device: str):
    """float32, and float64 where the backend computes it (the C++ kernels have an fp64 path of their own)."""
    return st.sampled_from([d for d in (torch.float32, torch.float64) if d in dtypes_for(backend, device)])
LAYOUTS = ("contiguous", "packed", "heads_first", "strided", "expanded_batch", "expanded_heads")


def budget(backend: str):
    """The profile's example budget; a fifth of it for Triton under its interpreter (seconds per example)."""
    examples = settings.default.max_examples
    return settings(max_examples=max(2, examples // 5) if backend == "triton" else examples)


# --------------------------------------------------------------------------------------------------
# Inputs: a float64 leaf and the view of it the op sees
# --------------------------------------------------------------------------------------------------


def make_view(layout: str, B: int, N: int, heads: int, d: int, slot: int = 0):
    """(leaf shape, view function): the view maps the leaf to a (B, N, heads, d) tensor stored as `layout`."""
    if layout == "contiguous":
        return (B, N, heads, d), lambda t: t
    if layout == "packed":  # one of qkv.unbind(2)
        return (B, N, 3, heads, d), lambda t: t[:, :, slot]
    if layout == "heads_first":
        return (B, heads, N, d), lambda t: t.transpose(1, 2)
    if layout == "strided":  # stride(-1) == 2: the kernels must copy, not misread
        return (B, N, heads, 2 * d), lambda t: t[..., ::2]
    if layout == "expanded_batch":
        return (1, N, heads, d), lambda t: t.expand(B, N, heads, d)
    if layout == "expanded_heads":
        return (B, N, 1, d), lambda t: t.expand(B, N, heads, d)
    raise ValueError(layout)


class Operand:
    """A random float64 leaf on the CPU, its copy in the tested dtype and device as a leaf too, and the
    view the op gets of each."""

    def __init__(self, layout: str, B: int, N: int, heads: int, d: int, slot: int, dtype: torch.dtype, device: str):
        shape, self.view = make_view(layout, B, N, heads, d, slot)
        self.exact = torch.randn(shape, dtype=torch.float64).requires_grad_()
        self.leaf = self.exact.detach().to(device, dtype).requires_grad_()  # the view is taken on the device

    def ours(self):
        return self.view(self.leaf)

    def reference(self):
        return self.view(self.exact)


def output_gradient(shape, expanded: bool) -> torch.Tensor:
    """A random output gradient, or one expanded over the tokens (stride 0), as `.sum()`-like losses give."""
    if expanded:
        return torch.randn(shape[0], 1, *shape[2:], dtype=torch.float64).expand(shape)
    return torch.randn(shape, dtype=torch.float64)


def compare(ours, reference, ours_leaves, reference_leaves, names, dout):
    """Output and the gradient of every leaf, ours (float32 or float64) against the float64 definition."""
    assert_matches("out", ours, reference.detach(), ours.dtype)
    grads = torch.autograd.grad(ours, ours_leaves, dout.to(ours.device, ours.dtype))
    wants = torch.autograd.grad(reference, reference_leaves, dout)
    for name, grad, want in zip(names, grads, wants):
        assert_matches(f"d{name}", grad, want, ours.dtype)


# every width up to 40 (vector tails, padded tiles), and a few wide heads
head_dims = st.one_of(st.integers(1, 40), st.sampled_from([64, 70, 128]))


def grids(side: int = 20):
    """1..3 frames of 1..side x 1..side."""
    return st.tuples(st.integers(1, 3), st.integers(1, side), st.integers(1, side))


# Triton's interpreter takes seconds per window of a few hundred tokens: its grids stay smaller
# (the example-based suites run it on the large windows)
INTERPRETED_SIDE = 10


@st.composite
def window_and_shift(draw, grid):
    """A window per axis from 1 to 2 past the grid (larger ones are clipped), and a shift below it."""
    window = tuple(draw(st.integers(1, g + 2)) for g in grid)
    shift = tuple(draw(st.integers(0, w - 1)) for w in window)
    return window, shift


# --------------------------------------------------------------------------------------------------
# local_attention
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,device", backend_params())
def test_local_attention_matches_dense_definition(backend, device, poison_empty):
    require(backend, device)

    @budget(backend)
    @given(data=st.data())
    def check(data):
        grid = data.draw(grids(INTERPRETED_SIDE if backend == "triton" and device == "cpu" else 20), "grid")
        window, shift = data.draw(window_and_shift(grid), "window, shift")
        B, heads, d = data.draw(st.integers(1, 2), "B"), data.draw(st.integers(1, 3), "heads"), data.draw(
            head_dims, "head_dim")
        layouts = [data.draw(st.sampled_from(LAYOUTS), f"{name} layout") for name in "qkv"]
        bias_storage = data.draw(st.sampled_from([None, "contiguous", "heads_last"]), "bias")
        six_d = data.draw(st.booleans(), "(B, F, H, W, heads, d) inputs")
        scale = data.draw(st.sampled_from([None, 0.3]), "scale")
        dtype = data.draw(dtypes(backend, device), "dtype")
        N = math.prod(grid)
        operands = [Operand(layout, B, N, heads, d, slot, dtype, device) for slot, layout in enumerate(layouts)]
        leaves = [(o.leaf, o.exact) for o in operands]
        names = ["q", "k", "v"]
        ours_bias = exact_bias = None
        if bias_storage:
            # heads_last: Swin's (positions, heads) parameter seen as the op's (heads, ...) table, not copied
            shape = bias_table_shape(window)
            exact = torch.randn(*((heads, *shape) if bias_storage == "contiguous" else (*shape, heads)),
                                dtype=torch.float64, requires_grad=True)
            leaf = exact.detach().to(device, dtype).requires_grad_()
            leaves.append((leaf, exact))
            names.append("bias")
            ours_bias, exact_bias = ((t if bias_storage == "contiguous" else t.permute(3, 0, 1, 2)) for t in (leaf, exact))
        q, k, v = (o.ours() for o in operands)
        if six_d:
            out = logo_attn.local_attention(*(t.unflatten(1, grid) for t in (q, k, v)), None, window, shift=shift,
                                            bias=ours_bias, scale=scale, backend=backend).flatten(1, 3)
        else:
            out = logo_attn.local_attention(q, k, v, grid, window, shift=shift, bias=ours_bias, scale=scale,
                                            backend=backend)
        clipped = clip_window(grid, window)
        expected = dense_local_attention(*(o.reference() for o in operands), grid, clipped,
                                         clip_shift(grid, window, shift), exact_bias, scale)
        dout = output_gradient(expected.shape, data.draw(st.booleans(), "expanded dout"))
        compare(out, expected, [a for a, _ in leaves], [b for _, b in leaves], names, dout)

    check()


# --------------------------------------------------------------------------------------------------
# global_attention
# --------------------------------------------------------------------------------------------------


def dense_global_attention(q, k, v, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)


@pytest.mark.parametrize("backend,device", backend_params())
def test_global_attention_matches_softmax_attention(backend, device, poison_empty):
    require(backend, device)

    @budget(backend)
    @given(data=st.data())
    def check(data):
        B, heads, d = data.draw(st.integers(1, 2), "B"), data.draw(st.integers(1, 3), "heads"), data.draw(
            head_dims, "head_dim")
        Nq, Nk = data.draw(st.integers(1, 60), "Nq"), data.draw(st.integers(1, 40), "Nk")
        layouts = [data.draw(st.sampled_from(LAYOUTS), f"{name} layout") for name in "qkv"]
        scale = data.draw(st.sampled_from([None, 0.3]), "scale")
        dtype = data.draw(dtypes(backend, device), "dtype")
        operands = [Operand(layouts[0], B, Nq, heads, d, 0, dtype, device)] + [
            Operand(layout, B, Nk, heads, d, slot, dtype, device) for slot, layout in enumerate(layouts[1:], 1)]
        out = logo_attn.global_attention(*(o.ours() for o in operands), scale=scale, backend=backend)
        expected = dense_global_attention(*(o.reference() for o in operands), scale)
        dout = output_gradient(expected.shape, data.draw(st.booleans(), "expanded dout"))
        compare(out, expected, [o.leaf for o in operands], [o.exact for o in operands], "qkv", dout)

    check()


# --------------------------------------------------------------------------------------------------
# window_pool
# --------------------------------------------------------------------------------------------------


def pool_by_definition(x, grid, window):
    """Mean of the tokens of each window, windows in row-major order, by index_add over window ids."""
    t, y, z = torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")
    counts = [-(-g // w) for g, w in zip(grid, window)]
    ids = ((t // window[0] * counts[1] + y // window[1]) * counts[2] + z // window[2]).flatten()
    windows = math.prod(counts)
    sums = torch.zeros(x.shape[0], windows, x.shape[2], dtype=x.dtype).index_add(1, ids, x)
    return sums / torch.bincount(ids, minlength=windows).to(x.dtype)[:, None]


POOL_LAYOUTS = {
    "contiguous": lambda B, N, C: ((B, N, C), lambda t: t),
    "channels_strided": lambda B, N, C: ((B, N, 2 * C), lambda t: t[..., ::2]),
    "channels_first": lambda B, N, C: ((B, C, N), lambda t: t.transpose(1, 2)),
    "expanded_batch": lambda B, N, C: ((1, N, C), lambda t: t.expand(B, N, C)),
}


@pytest.mark.parametrize("backend,device", backend_params())
def test_window_pool_matches_window_means(backend, device, poison_empty):
    require(backend, device)

    @budget(backend)
    @given(data=st.data())
    def check(data):
        grid = data.draw(grids(), "grid")
        window = tuple(data.draw(st.integers(1, g + 2), "window") for g in grid)
        B, C = data.draw(st.integers(1, 2), "B"), data.draw(st.integers(1, 70), "C")
        shape, view = POOL_LAYOUTS[data.draw(st.sampled_from(sorted(POOL_LAYOUTS)), "layout")](B, math.prod(grid), C)
        exact = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        leaf = exact.detach().to(device, data.draw(dtypes(backend, device), "dtype")).requires_grad_()
        out = logo_attn.window_pool(view(leaf), grid, window, backend=backend)
        expected = pool_by_definition(view(exact), grid, clip_window(grid, window))
        dout = output_gradient(expected.shape, data.draw(st.booleans(), "expanded dout"))
        compare(out, expected, [leaf], [exact], ["x"], dout)

    check()


# --------------------------------------------------------------------------------------------------
# The layer, with prefix tokens
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,device", backend_params())
def test_layer_with_prefix_tokens_matches_its_float64_self(backend, device, poison_empty):
    """LocalGlobalAttention on the backend against the same layer in float64 on the reference: the
    ops composed with prefix (CLS) tokens, pooled keys and both pooling kinds, every parameter's gradient."""
    require(backend, device)

    @budget(backend)
    @given(data=st.data())
    def check(data):
        grid = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)), "grid")
        window = tuple(data.draw(st.integers(1, g + 1), "window") for g in grid)
        heads, d = data.draw(st.integers(1, 3), "heads"), data.draw(st.sampled_from([4, 8, 12]), "head_dim")
        prefix, pool = data.draw(st.integers(0, 2), "prefix tokens"), data.draw(st.sampled_from(["avg", "conv"]), "pool")
        B = data.draw(st.integers(1, 2), "B")
        exact_layer = logo_attn.LocalGlobalAttention(heads * d, heads, window, pool=pool, num_prefix_tokens=prefix,
                                                     qkv_bias=True, backend="torch").double()
        dtype = data.draw(dtypes(backend, device), "dtype")
        layer = copy.deepcopy(exact_layer).to(device, dtype)
        layer.backend = backend
        exact = torch.randn(B, prefix + math.prod(grid), heads * d, dtype=torch.float64, requires_grad=True)
        leaf = exact.detach().to(device, dtype).requires_grad_()
        out, expected = layer(leaf, grid), exact_layer(exact, grid)
        dout = output_gradient(expected.shape, False)
        compare(out, expected, [leaf, *layer.parameters()], [exact, *exact_layer.parameters()],
                ["x", *(name for name, _ in layer.named_parameters())], dout)

    check()
