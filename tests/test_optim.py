"""SAM: the perturbation and restore by hand, descent on a toy problem, closure form, GradScaler, BN helper."""

import pytest
import torch
from torch import nn

from logo_attn.logoformer.optim import SAM, frozen_bn_stats

A = torch.tensor([1.0, 3.0, -2.0, 0.5], dtype=torch.float64)


def quadratic(w: torch.Tensor) -> torch.Tensor:
    """L(w) = sum(A * w^2) + sum(w), gradient 2 A w + 1."""
    return (A * w * w).sum() + w.sum()


def grad(w: torch.Tensor) -> torch.Tensor:
    return 2 * A * w + 1


def test_first_step_perturbs_second_step_restores_and_descends_by_hand():
    w0 = torch.tensor([0.3, -0.7, 1.1, 2.0], dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    sam = SAM([w], torch.optim.SGD, rho=0.1, lr=0.05)
    quadratic(w).backward()
    sam.first_step(zero_grad=True)
    g0 = grad(w0)
    perturbed = w0 + 0.1 * g0 / g0.norm()
    torch.testing.assert_close(w.detach(), perturbed, rtol=1e-12, atol=1e-12)
    assert w.grad is None
    quadratic(w).backward()
    sam.second_step(zero_grad=True)
    # restored to w0, then SGD with the gradient taken at the perturbed point
    torch.testing.assert_close(w.detach(), w0 - 0.05 * grad(perturbed), rtol=1e-12, atol=1e-12)


def test_closure_step_equals_manual_steps():
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    model_b = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    model_b.load_state_dict(model_a.state_dict())
    x, y = torch.randn(16, 5), torch.randn(16, 1)
    sam_a = SAM(model_a.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    sam_b = SAM(model_b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    for _ in range(3):
        nn.functional.mse_loss(model_a(x), y).backward()
        sam_a.first_step(zero_grad=True)
        nn.functional.mse_loss(model_a(x), y).backward()
        sam_a.second_step(zero_grad=True)

        def closure():
            loss = nn.functional.mse_loss(model_b(x), y)
            loss.backward()
            return loss

        sam_b.step(closure)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_descends_on_a_toy_regression():
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = x @ torch.randn(6, 1) + 0.01 * torch.randn(64, 1)
    model = nn.Linear(6, 1)
    sam = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)

    def closure():
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = sam.step(closure).item()
    for _ in range(100):
        last = sam.step(closure).item()
    assert last < 0.01 * first


def test_rho_zero_is_the_base_optimizer():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 2), nn.Linear(4, 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4)
    sam = SAM(a.parameters(), torch.optim.AdamW, rho=0.0, lr=1e-2)
    adam = torch.optim.AdamW(b.parameters(), lr=1e-2)
    for _ in range(3):
        sam.step(lambda: a(x).square().mean().backward())
        adam.zero_grad()
        b(x).square().mean().backward()
        adam.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_state_dict_is_the_base_optimizers_and_round_trips():
    model = nn.Linear(3, 1)
    sam = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    sam.step(lambda: model(torch.ones(2, 3)).sum().backward())
    state = sam.state_dict()
    assert state == sam.base_optimizer.state_dict() and len(state["state"]) == 2  # momentum buffers
    other = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.5, momentum=0.9)
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(other.base_optimizer.state[model.weight]["momentum_buffer"],
                               sam.base_optimizer.state[model.weight]["momentum_buffer"])


def test_scheduler_drives_shared_groups():
    model = nn.Linear(3, 1)
    sam = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(sam.base_optimizer, step_size=1, gamma=0.5)
    sam.step(lambda: model(torch.ones(2, 3)).sum().backward())
    scheduler.step()
    assert sam.param_groups[0]["lr"] == 0.5 and sam.base_optimizer.param_groups[0]["lr"] == 0.5


def test_grad_scaler_path_matches_unscaled_and_skips_overflow():
    torch.manual_seed(0)
    ref, scaled = nn.Linear(4, 3), nn.Linear(4, 3)
    scaled.load_state_dict(ref.state_dict())
    x = torch.randn(8, 4)
    sam_ref = SAM(ref.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    sam_scaled = SAM(scaled.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)

    sam_ref.step(lambda: ref(x).square().mean().backward())
    scaler.scale(scaled(x).square().mean()).backward()
    sam_scaled.first_step(zero_grad=True)  # on scaled gradients: the direction does not depend on the scale
    scaler.scale(scaled(x).square().mean()).backward()
    sam_scaled.second_step(zero_grad=True, scaler=scaler)
    scaler.update()
    for pa, pb in zip(ref.parameters(), scaled.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)

    # an overflow: no perturbation, no step, the scale shrinks
    before = [p.detach().clone() for p in scaled.parameters()]
    scaler.scale(scaled(x).square().mean() * float("inf")).backward()
    sam_scaled.first_step(zero_grad=False)
    for p, b in zip(scaled.parameters(), before):
        assert torch.equal(p.detach(), b)
    sam_scaled.second_step(zero_grad=True, scaler=scaler)
    old_scale = scaler.get_scale()
    scaler.update()
    for p, b in zip(scaled.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert scaler.get_scale() < old_scale


def test_bf16_autocast_step_tracks_fp32():
    torch.manual_seed(0)
    a, b = nn.Linear(16, 4), nn.Linear(16, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(32, 16)
    sam_a = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.5)
    sam_b = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.5)
    sam_a.step(lambda: a(x).square().mean().backward())

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = b(x).float().square().mean()
        loss.backward()
        return loss

    sam_b.step(closure)
    assert all(p.dtype == torch.float32 for p in b.parameters())
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=2e-2, atol=2e-2)


def test_frozen_bn_stats():
    bn = nn.BatchNorm1d(3)
    bn(torch.randn(8, 3))
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    with frozen_bn_stats(nn.Sequential(bn)):
        out = bn(5 + torch.randn(8, 3))
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert out.mean().abs() < 1e-5  # still normalised with the batch statistics
    assert bn.momentum == 0.1
    bn(5 + torch.randn(8, 3))
    assert not torch.equal(bn.running_mean, mean)


def test_errors():
    w = nn.Parameter(torch.ones(2))
    sam = SAM([w], torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        sam.first_step()
    with pytest.raises(RuntimeError, match="needs a closure"):
        sam.step()
    with pytest.raises(TypeError, match="optimizer class"):
        SAM([w], torch.optim.SGD([w], lr=0.1))
    with pytest.raises(ValueError, match="rho"):
        SAM([w], torch.optim.SGD, rho=-1.0, lr=0.1)
