"""logo_attn.flops against brute force: every scheme's attended pairs counted from explicit masks."""

import itertools
import math

import pytest
import torch

from logo_attn import flops

# (grid, window): divisible, non-divisible on every axis, window larger than the grid, single frame
CASES = [((4, 6, 6), (2, 3, 3)), ((5, 7, 4), (2, 3, 3)), ((3, 2, 5), (4, 7, 2)), ((1, 5, 5), (2, 2, 2))]


def coordinates(grid):
    return torch.tensor(list(itertools.product(*(range(g) for g in grid))))  # (N, 3), row-major (t, y, x)


def brute_force_pairs(scheme, grid, window, prefix):
    """Attended pairs from explicit masks, built without any formula of logo_attn.flops."""
    tokens = math.prod(grid)
    t, y, x = coordinates(grid).T
    same_frame = t[:, None] == t[None, :]
    same_place = (y[:, None] == y[None, :]) & (x[:, None] == x[None, :])
    if scheme == "full":
        return (tokens + prefix) ** 2
    # spatial attention per frame: the frame's tokens plus one copy of each prefix token (TimeSformer)
    spatial = int(same_frame.sum()) + grid[0] * (2 * prefix * grid[1] * grid[2] + prefix * prefix)
    if scheme == "spatial":
        return spatial
    if scheme == "divided":  # temporal: each grid token attends its own location in every frame; then spatial
        return int(same_place.sum()) + spatial
    window = [min(w, g) for w, g in zip(window, grid)]
    same_window = torch.ones(tokens, tokens, dtype=torch.bool)
    for axis, w in zip((t, y, x), window):
        same_window &= (axis[:, None] // w) == (axis[None, :] // w)
    pooled = len({(int(a) // window[0], int(b) // window[1], int(c) // window[2]) for a, b, c in zip(t, y, x)})
    return int(same_window.sum()) + (tokens + prefix) * (pooled + prefix)


@pytest.mark.parametrize("prefix", [0, 1, 3])
@pytest.mark.parametrize("grid,window", CASES)
@pytest.mark.parametrize("scheme", flops.SCHEMES)
def test_attention_pairs_match_brute_force(scheme, grid, window, prefix):
    assert flops.attention_pairs(scheme, grid, window, prefix) == brute_force_pairs(scheme, grid, window, prefix)


@pytest.mark.parametrize("scheme", flops.SCHEMES)
@pytest.mark.parametrize("grid", [(16, 7, 7), (8, 14, 14), (4, 4, 6)])
def test_paper_formula_is_exact_when_windows_divide(scheme, grid):
    window = (2, 7, 7) if grid[1] % 7 == 0 else (2, 2, 3)
    assert flops.paper_attention_pairs(scheme, grid, window) == flops.attention_pairs(scheme, grid, window)


def test_paper_formula_differs_at_border_windows():
    """With a window that does not divide the grid the paper's expression is only an estimate."""
    grid, window = (16, 10, 10), (2, 7, 7)
    assert flops.paper_attention_pairs("logo", grid, window) != flops.attention_pairs("logo", grid, window)


def test_model_default_grid_logo_costs_more_pairs_than_divided():
    """The documented crossover: at 16x7x7 with a 2x7x7 window LOGO attends more pairs, at 16x14x14 fewer."""
    assert flops.attention_pairs("logo", (16, 7, 7), (2, 7, 7)) == 784 * 98 + 784 * 8
    assert flops.attention_pairs("divided", (16, 7, 7)) == 784 * 16 + 784 * 49
    assert flops.attention_pairs("logo", (16, 7, 7), (2, 7, 7)) > flops.attention_pairs("divided", (16, 7, 7))
    assert flops.attention_pairs("logo", (16, 14, 14), (2, 7, 7)) < flops.attention_pairs("divided", (16, 14, 14))


@pytest.mark.parametrize("heads,head_dim", [(8, 32), (3, 20)])
def test_macs_are_half_the_flops(heads, head_dim):
    pairs, batch = 1234, 3
    assert 2 * flops.attention_macs(pairs, heads * head_dim, batch) == flops.attention_flops(pairs, batch, heads, head_dim)


@pytest.mark.parametrize("bad", ["windowed", "MSA"])
def test_unknown_scheme_is_named(bad):
    with pytest.raises(ValueError, match="scheme must be one of"):
        flops.attention_pairs(bad, (4, 4, 4), (2, 2, 2))
    with pytest.raises(ValueError, match="scheme must be one of"):
        flops.paper_attention_pairs(bad, (4, 4, 4), (2, 2, 2))


def test_logo_needs_a_window():
    with pytest.raises(ValueError, match="needs a window"):
        flops.attention_pairs("logo", (4, 4, 4))
