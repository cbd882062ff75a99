"""Compact loss: against an independent per-sample float64 formulation, and its stated properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from logo_attn.logoformer.losses import CompactLoss, compact_regularizer


def symmetric_kl_reference(logits: torch.Tensor, target: torch.Tensor) -> float:
    """D(u'||p') + D(p'||u') per sample with Python floats, p' from the max-shifted non-target logits."""
    total = 0.0
    for row, y in zip(logits.double().tolist(), target.tolist()):
        others = [z for c, z in enumerate(row) if c != y]
        top = max(others)
        log_norm = math.log(sum(math.exp(z - top) for z in others))
        log_p = [z - top - log_norm for z in others]  # exact even where exp(log_p) underflows to 0
        log_u = -math.log(len(others))
        total += sum(math.exp(log_u) * (log_u - lp) for lp in log_p)
        total += sum(math.exp(lp) * (lp - log_u) for lp in log_p)
    return total / len(target)


@pytest.mark.parametrize("classes", [3, 4, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_independent_formulation(classes, dtype):
    logits = 3 * torch.randn(16, classes, dtype=dtype)
    target = torch.randint(classes, (16,))
    got = compact_regularizer(logits, target)
    assert got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.item() == pytest.approx(symmetric_kl_reference(logits, target), rel=tol, abs=tol)


def test_matches_kl_div_formulation():
    # the same two divergences written with PyTorch's own kl_div on the gathered non-target probabilities
    logits = torch.randn(8, 7, dtype=torch.float64)
    target = torch.randint(7, (8,))
    keep = ~F.one_hot(target, 7).bool()
    log_p = torch.log_softmax(logits[keep].view(8, 6), dim=1)
    log_u = torch.full_like(log_p, -math.log(6))
    expected = F.kl_div(log_p, log_u, log_target=True, reduction="batchmean") + F.kl_div(
        log_u, log_p, log_target=True, reduction="batchmean")
    torch.testing.assert_close(compact_regularizer(logits, target), expected)


def test_two_classes_give_zero():
    logits = torch.randn(10, 2, requires_grad=True)
    target = torch.randint(2, (10,))
    term = compact_regularizer(logits, target)
    term.backward()
    assert term.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_zero_iff_non_target_logits_are_equal():
    target = torch.tensor([0, 3])
    equal = torch.tensor([[9.0, 1.0, 1.0, 1.0], [-2.0, -2.0, -2.0, 50.0]])
    assert compact_regularizer(equal, target).item() == pytest.approx(0.0, abs=1e-6)
    unequal = torch.tensor([[9.0, 1.0, 2.0, 1.0], [-2.0, -2.0, -1.0, 50.0]])
    assert compact_regularizer(unequal, target).item() > 1e-3


def test_target_logit_has_no_gradient():
    logits = torch.randn(6, 5, requires_grad=True)
    target = torch.randint(5, (6,))
    compact_regularizer(logits, target).backward()
    assert torch.count_nonzero(logits.grad.gather(1, target[:, None])) == 0
    assert torch.count_nonzero(logits.grad) > 0


def test_stable_for_large_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0, 5e3], [-3e4, 3e4, 3e4 - 5.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 1])
    term = compact_regularizer(logits, target)
    term.backward()
    assert torch.isfinite(term) and torch.isfinite(logits.grad).all()
    assert term.item() == pytest.approx(symmetric_kl_reference(logits.detach(), target), rel=1e-6)


def test_bf16_logits_reduce_in_fp32():
    logits = torch.randn(4, 7).bfloat16()
    target = torch.randint(7, (4,))
    assert compact_regularizer(logits, target).dtype == torch.float32
    assert CompactLoss()(logits, target).dtype == torch.float32


def test_compact_loss_is_cross_entropy_plus_weighted_term():
    logits = torch.randn(12, 7, dtype=torch.float64)
    target = torch.randint(7, (12,))
    ce = F.cross_entropy(logits, target)
    torch.testing.assert_close(CompactLoss(reg_weight=0.0)(logits, target), ce)
    torch.testing.assert_close(CompactLoss(reg_weight=0.5)(logits, target),
                               ce + 0.5 * symmetric_kl_reference(logits, target))


@pytest.mark.parametrize("logits, target, message", [
    (torch.randn(4, 1), torch.zeros(4, dtype=torch.long), "at least 2 classes"),
    (torch.randn(4), torch.zeros(4, dtype=torch.long), "logits must be"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), r"target values must be in \[0, 3\)"),
    (torch.randn(4, 3), torch.zeros(4), "integer class indices"),
])
def test_bad_input(logits, target, message):
    with pytest.raises(ValueError, match=message):
        compact_regularizer(logits, target)


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="reg_weight"):
        CompactLoss(reg_weight=-1.0)
