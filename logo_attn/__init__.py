"""logo_attn: fast local-global (LOGO-Former) attention for spatio-temporal transformers."""

from . import _extension
from ._version import __version__
from .backends import available_backends
from .layers import LocalGlobalAttention, LOGOBlock
from .model import LOGOFormer
from .ops import global_attention, local_attention, window_pool

_extension.warn_once_if_unusable()  # says once why the C++ kernels are missing, and the fix

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
