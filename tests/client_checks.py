"""What the client-swap suites (test_swap_torchvision.py, test_swap_timm.py) share: a swapped copy
of a client module, and the comparison of two modules' outputs and the gradients of the input and
of every parameter (matched by name), float64 within 1e-10, lower precisions by the 2x rule
against the client's own error in that precision."""

from __future__ import annotations

import copy

import torch
from torch import nn

from oracle import TOLERANCE, max_error


def swapped_copy(module: nn.Module, swap, **kwargs) -> nn.Module:
    """A deep copy of `module` with `swap(copy, **kwargs)` applied: same values, its own parameters."""
    return swap(copy.deepcopy(module), **kwargs)


def outputs_and_grads(module: nn.Module, x: torch.Tensor, dout: torch.Tensor | None, run=None):
    """{name: tensor} of the output and, under cotangent `dout`, of the gradients of x and of every
    parameter that gets one."""
    x = x.detach().clone().requires_grad_(True)
    out = (run or module)(x)
    result = {"output": out.detach()}
    if dout is None:
        return result
    params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, [x, *(p for _, p in params)], dout.to(out.dtype), allow_unused=True)
    result["grad of x"] = grads[0]
    for (name, _), g in zip(params, grads[1:]):
        if g is not None:
            result[f"grad of {name}"] = g
    return result


def assert_same_function(ours: nn.Module, client: nn.Module, x: torch.Tensor, *, backward: bool = True,
                         run_ours=None, run_client=None) -> None:
    """Float64 modules: output and every gradient of `ours` within 1e-10 of `client`'s."""
    dout = torch.randn_like(client(x)) if backward else None
    got = outputs_and_grads(ours, x, dout, run_ours)
    want = outputs_and_grads(client, x, dout, run_client)
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    for name, w in want.items():
        err = max_error(got[name], w)
        bound = TOLERANCE[torch.float64] * max(1.0, w.abs().max().item())
        assert err <= bound, f"{name}: max error {err:.3e} exceeds {bound:.3e}"


def assert_low_precision(ours: nn.Module, client: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
    """`ours` and `client` (float64 modules holding the same values) cast to `dtype`: the error of
    ours against the float64 client, output and every gradient, is at most twice the client's own
    error in `dtype` plus one rounding unit; in float32 also anything within the suites' float32
    tolerance (a parameter's gradient sums over every token, in another order than the client's)."""
    truth_dout = torch.randn_like(client(x))
    truth = outputs_and_grads(client, x, truth_dout)
    low = [copy.deepcopy(m).to(dtype) for m in (ours, client)]
    got, theirs = (outputs_and_grads(m, x.to(dtype), truth_dout.to(dtype)) for m in low)
    for name, t in truth.items():
        magnitude = max(1.0, t.abs().max().item())
        bound = 2 * max_error(theirs[name], t) + torch.finfo(dtype).eps * magnitude
        if dtype in TOLERANCE:
            bound = max(bound, TOLERANCE[dtype] * magnitude)
        err = max_error(got[name], t)
        assert err <= bound, f"{dtype} {name}: max error {err:.3e} exceeds {bound:.3e} (2 x the client's own)"


def assert_state_dicts_round_trip(client: nn.Module, swap, make_client, x: torch.Tensor) -> None:
    """The swapped model's state_dict is the client's (keys and values); a fresh client loads the
    swapped one's strictly and a fresh swapped model the client's, each then computing as before."""
    ours = swapped_copy(client, swap)
    theirs_sd, ours_sd = client.state_dict(), ours.state_dict()
    assert list(theirs_sd) == list(ours_sd)
    assert all(torch.equal(theirs_sd[k], ours_sd[k]) for k in theirs_sd)
    fresh_client = make_client()
    fresh_client.load_state_dict(ours_sd, strict=True)
    fresh_ours = swap(make_client())
    fresh_ours.load_state_dict(theirs_sd, strict=True)
    want = client(x)
    for name, module in (("client loading the swapped state_dict", fresh_client), ("swapped loading the client's", fresh_ours)):
        err = max_error(module(x), want)
        assert err <= TOLERANCE[torch.float64] * max(1.0, want.abs().max().item()), f"{name}: max error {err:.3e}"


def randomize_(module: nn.Module, names: tuple[str, ...], std: float = 0.5) -> nn.Module:
    """Parameters whose name ends in one of `names` drawn at `std` (the clients initialise the bias
    tables near zero, which would hide a wrong bias in the comparison)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(names):
                p.normal_(0.0, std)
    return module
