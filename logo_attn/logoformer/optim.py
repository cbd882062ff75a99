"""Sharpness-aware minimisation (Foret et al., 2021), the optimiser wrapper the paper trains with.

Each step takes two gradients: ``g = grad L(w)``, then ``grad L(w + e)`` at the worst-case neighbour
``e = rho * g / ||g||`` (one global L2 norm over all parameters), and updates the *original* weights
with the base optimiser using that second gradient.

Distributed data parallel: run both passes as ordinary DDP forward/backward passes, so both
gradients are all-reduced. Then every rank computes the same ``e`` from the global gradient, the
perturbed weights stay identical across ranks, and the step equals single-process SAM on the whole
batch (tests/test_ddp.py checks this). Wrapping the first pass in ``no_sync()`` (as some SAM code
does to save one all-reduce) makes each rank perturb by its own local gradient: that is
"m-sharpness" with m = the per-rank batch, a different algorithm, and the ranks' perturbed weights
then differ; we do not do it.

Mixed precision: with bf16 autocast nothing changes (gradients of fp32 parameters are fp32). With
fp16 and a ``GradScaler``: ``scaler.scale(loss).backward(); sam.first_step(zero_grad=True)`` works on
the scaled gradients directly, because ``rho * g / ||g||`` does not depend on the scale, and a
non-finite norm (an overflow) skips the perturbation; then ``scaler.scale(loss2).backward();
sam.second_step(zero_grad=True, scaler=scaler); scaler.update()``, where the scaler unscales, skips
the step on overflow, and steps the base optimiser.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["SAM", "frozen_bn_stats"]


class SAM(torch.optim.Optimizer):
    """SAM around any optimiser: ``SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=1e-3, momentum=0.9)``.

    ``base_optimizer`` is an optimiser class, built on SAM's parameter groups with ``**kwargs``; the
    groups are shared, so learning-rate schedulers may drive ``sam.base_optimizer`` (or ``sam``).

    Use either the two calls::

        loss_fn(model(x), y).backward()
        sam.first_step(zero_grad=True)        # w -> w + e
        loss_fn(model(x), y).backward()
        sam.second_step(zero_grad=True)       # w + e -> w, then the base step

    or ``sam.step(closure)`` where ``closure`` computes the loss, calls ``backward()`` and returns the
    loss; `step` clears the gradients before each of its two calls of ``closure``.

    ``state_dict``/``load_state_dict`` are the base optimiser's (the perturbation is transient).
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05, **kwargs) -> None:
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise TypeError(f"base_optimizer must be an optimizer class such as torch.optim.SGD, got {base_optimizer!r}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    def _params_with_grad(self) -> Iterator[tuple[dict, Tensor]]:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p

    @torch.no_grad()
    def grad_norm(self) -> Tensor:
        """Global L2 norm of all gradients, accumulated in fp32 (fp64 for fp64 gradients)."""
        norms = [p.grad.norm(2, dtype=torch.promote_types(p.grad.dtype, torch.float32)) for _, p in self._params_with_grad()]
        if not norms:
            raise RuntimeError("SAM.first_step: no parameter has a gradient; call backward() first")
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter to ``w + rho * g / ||g||`` (no move if ``||g||`` is not finite)."""
        norm = self.grad_norm()
        finite = torch.isfinite(norm)
        for group, p in self._params_with_grad():
            scale = (group["rho"] / (norm + 1e-12)).to(device=p.device, dtype=p.dtype)
            self.state[p]["old_p"] = p.detach().clone()
            # no host sync on the overflow check: an inf/NaN gradient contributes a zero move
            p.add_(torch.where(finite.to(p.device), p.grad * scale, 0.0))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, scaler: torch.amp.GradScaler | None = None) -> None:
        """Restore the weights saved by `first_step`, then step the base optimiser (through `scaler` if given)."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)
        if scaler is None:
            self.base_optimizer.step()
        else:
            scaler.step(self.base_optimizer)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:
        """Both SAM passes: ``closure`` (at w), `first_step`, ``closure`` (at w + e), `second_step`."""
        if closure is None:
            raise RuntimeError("SAM.step needs a closure (forward + backward returning the loss); "
                               "or call first_step() and second_step() yourself")
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with batch statistics but leave their running statistics alone.

    Use it around SAM's second forward pass, so the running mean/var see each batch once, at the
    unperturbed weights (what the SAM reference code does).
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum
