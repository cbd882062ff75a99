"""logo_attn: fast local-global (LOGO-Former) attention for spatio-temporal transformers.

The top level is the kernel library: the ops (`local_attention`, `global_attention`,
`window_pool`), the layers built on them, the baselines they are compared with, Swin's window
attention (`WindowAttention3D`, `swap_monai_attention`), the swaps for torchvision's and timm's
Swin (`swap_torchvision_attention`, `swap_timm_attention`: each imports its client only when
called), and `available_backends`; context parallelism (one clip's grid split along time over a
process group) is `logo_attn.distributed`. `LOGOFormer`,
the paper's model, lives in the application subpackage `logo_attn.logoformer`; it is importable
from here too, loaded only when asked for, so importing the library never imports the application.
"""

from . import _extension
from ._version import __version__
from .backends import available_backends
from .baselines import DividedAttention, FullAttention, SpatialAttention
from .layers import Block, LocalGlobalAttention, LOGOBlock
from .ops import global_attention, local_attention, window_pool
from .swap_timm import swap_timm_attention
from .swap_torchvision import swap_torchvision_attention
from .swin import WindowAttention3D, swap_monai_attention

_extension.warn_once_if_unusable()  # says once why the C++ kernels are missing, and the fix

__all__ = [
    "__version__",
    "available_backends",
    "local_attention",
    "global_attention",
    "window_pool",
    "LocalGlobalAttention",
    "LOGOBlock",
    "Block",
    "FullAttention",
    "SpatialAttention",
    "DividedAttention",
    "WindowAttention3D",
    "swap_monai_attention",
    "swap_torchvision_attention",
    "swap_timm_attention",
    "LOGOFormer",
]


def __getattr__(name: str):
    if name == "LOGOFormer":
        from .logoformer import LOGOFormer

        return LOGOFormer
    raise AttributeError(f"module 'logo_attn' has no attribute {name!r}")
