"""The public ops, one module each: argument checks, the registered custom ops (forward and
backward, with fakes), their autograd glue and FLOP formulas.

Each op is a pair of ``torch.library.custom_op``s (``logo_attn::<op>_fwd`` / ``_bwd``) whose
``backend`` string is a schema argument resolved inside the op on real tensors
(`logo_attn.backends`), so the ops stay opaque to ``torch.compile`` whatever runs underneath, glued
by a ``torch.autograd.Function`` (``LocalAttnFunction``, ...).
"""

from .global_attn import global_attention
from .local_attn import local_attention
from .window_pool import window_pool

__all__ = ["local_attention", "global_attention", "window_pool"]
