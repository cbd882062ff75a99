"""logo_attn: fast local-global (LOGO-Former) attention for spatio-temporal transformers."""

from ._version import __version__
from .backends import available_backends
from .layers import LocalGlobalAttention, LOGOBlock
from .model import LOGOFormer
from .ops import global_attention, local_attention, window_pool

__all__ = [
    "__version__",
    "available_backends",
    "local_attention",
    "global_attention",
    "window_pool",
    "LocalGlobalAttention",
    "LOGOBlock",
    "LOGOFormer",
]
