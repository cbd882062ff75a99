"""LOGO-Former (Ma, Sun, Li, ICASSP 2023) for dynamic facial expression recognition: the paper's
application of the logo_attn library.

The model and its baselines (`model`), the compact loss (`losses`), SAM (`optim`), UAR/WAR
(`metrics`), the DFEW/FERV39K/annotation-list loaders (`data`, `augment`), synthetic clips whose
class lies only in frame order (`synthetic`), training (`train`, with `config`, `distributed`,
`loop`, `checkpoints`, `reports`) and evaluation (`evaluate`). It imports the library; the library
never imports it.
"""

from .model import LOGOFormer

__all__ = ["LOGOFormer"]
