"""The paper's compact loss: cross-entropy plus a symmetric-KL regulariser on the non-target classes.

Paper §2.3, eqs. (11)-(12). With ``p' = softmax({logit_c}_{c != y})`` (the prediction restricted to
the C-1 non-target classes and renormalised) and ``u'`` the uniform distribution over those classes,

    L_term = D(u' || p') + D(p' || u')
           = sum_{c != y} 1/(C-1) * log(1 / ((C-1) p'_c))  +  sum_{c != y} p'_c * log((C-1) p'_c).

Pushing p' towards uniform spreads the non-target mass evenly, so no wrong class is singled out:
the paper's "compact" features (small intra-class, large inter-class distance).

Eq. (12) as printed does not match its own first line: its second sum reads
``sum_{c != y} log(1 / ((C-1) p'))``, which drops the weight ``p'_c`` of D(p'||u') and flips the sign of
the log; that expression is not a KL divergence (it is unbounded below). We implement the symmetric
KL that the first line and the text define, and say so here. (The text's "u' is calculated by the
softmax function" likewise means p'.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["compact_regularizer", "CompactLoss"]


def compact_regularizer(logits: Tensor, target: Tensor) -> Tensor:
    """Symmetric KL between softmax of the non-target logits and the uniform distribution, batch mean.

    Args:
        logits: ``(B, C)`` with C >= 2.
        target: ``(B,)`` integer class indices in ``[0, C)``.

    Returns:
        A scalar in the promoted float dtype of ``logits`` (at least fp32). Exactly 0 for C = 2 (a
        single non-target class is always "uniform"). Computed from ``log_softmax``, so it is finite
        for any finite logits.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {tuple(logits.shape)}")
    B, C = logits.shape
    if C < 2:
        raise ValueError(f"the compact regulariser needs at least 2 classes, got {C}")
    if target.shape != (B,) or target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"target must be ({B},) integer class indices, got {target.dtype} of shape {tuple(target.shape)}")
    if B and (target.min() < 0 or target.max() >= C):
        raise ValueError(f"target values must be in [0, {C}), got min {int(target.min())}, max {int(target.max())}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, target.long()[:, None], False)
    others = logits[keep].view(B, C - 1)  # non-target logits, in class order
    log_p = F.log_softmax(others, dim=1)
    log_k = math.log(C - 1)  # log(1 / u'_c)
    kl_u_p = -log_k - log_p.mean(dim=1)  # sum_c u_c (log u_c - log p_c)
    kl_p_u = (log_p.exp() * (log_p + log_k)).sum(dim=1)  # sum_c p_c (log p_c - log u_c)
    return (kl_u_p + kl_p_u).mean()


class CompactLoss(nn.Module):
    """``cross_entropy(logits, target) + reg_weight * compact_regularizer(logits, target)``.

    ``label_smoothing`` is passed to the cross-entropy.
    """

    def __init__(self, reg_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
        self.reg_weight = reg_weight
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits under autocast
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        if self.reg_weight:
            loss = loss + self.reg_weight * compact_regularizer(logits, target)
        return loss

    def extra_repr(self) -> str:
        return f"reg_weight={self.reg_weight}, label_smoothing={self.label_smoothing}"
