"""LOGOFormer, the paper's reference model, and its attention baselines on the same skeleton.

Skeleton (paper §2.1): every frame goes through ResNet-18 up to layer3 (stride 16, 256
channels), a 1x1 conv projects the maps to ``embed_dim``, a learnable spatio-temporal positional
embedding is added, a CLS token with its own (temporal) positional embedding is prepended, ``depth``
attention blocks follow, and LayerNorm + Linear classify the CLS token.

``attention`` picks the blocks:

- ``"logo"``: `logo_attn.layers.LOGOBlock` (local window attention + global attention over pooled
  windows), the paper's model.
- ``"full"``: joint space-time attention over all ``1 + F*H*W`` tokens
  (`logo_attn.baselines.FullAttention` blocks).
- ``"divided"``: TimeSformer's divided space-time attention (`logo_attn.baselines.DividedAttention`
  blocks): temporal attention among the F tokens of each spatial position, then spatial attention
  among the ``1 + H*W`` tokens of each frame, the CLS token copied into every frame and averaged.
- ``"spatial"``: spatial-only attention followed by a temporal mean (the "simple solution" of the
  paper's introduction): each frame is its own sequence ``[CLS ; H*W tokens]`` run through
  `FullAttention` blocks, and the per-frame CLS outputs are averaged over time before the head. No
  token ever sees another frame, so this variant cannot tell motion direction or frame order.

Every block is `logo_attn.layers.Block` (attention layer with its residual, then the MLP) around one
of the library's attention layers, the same layers the cost benchmark times. The baselines use
``F.scaled_dot_product_attention``. The ResNet trunk uses torchvision's parameter
names, so the ``conv1``/``bn1``/``layer1``-``layer3`` entries of a torchvision or MS-Celeb-1M ResNet-18
checkpoint load with strict name matching (`load_backbone_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import backends
from ..baselines import DividedAttention, FullAttention
from ..checks import as_int, as_window
from ..distributed import TimeSharding
from ..geometry import clip_window
from ..layers import Block, LOGOBlock
from .torch_files import load_torch_file

__all__ = ["ATTENTIONS", "LOGOFormer", "ResNet18Trunk", "backbone_state_dict", "grid_for"]

ATTENTIONS = ("logo", "full", "divided", "spatial")

# Checkpoint keys that are not part of the trunk and are dropped before strict loading.
_HEAD_PREFIXES = ("fc.", "layer4.")
# Wrappers found around ResNet-18 checkpoints: {"state_dict": ...} (MS-Celeb-1M releases, Lightning),
# {"model": ...}, and "module." key prefixes from DataParallel/DDP.
_WRAPPER_KEYS = ("state_dict", "model")
_KEY_PREFIXES = ("module.",)


# --------------------------------------------------------------------------------------------------
# ResNet-18 trunk (torchvision names: conv1, bn1, layer1..layer3, each block conv1/bn1/conv2/bn2/downsample)
# --------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with BN and a (projected) identity shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Trunk(nn.Module):
    """ResNet-18 from the stem up to layer3: (N, 3, H, W) -> (N, 256, H/16, W/16) (ceil at each stride)."""

    out_channels = 256
    # (kernel, stride, padding) of the four stride-2 stages: conv1, maxpool, layer2, layer3.
    _STRIDED = ((7, 2, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1))

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def feature_size(cls, size: int) -> int:
        """Height (or width) of the output map for an input of this height (or width)."""
        for kernel, stride, padding in cls._STRIDED:
            size = (size + 2 * padding - kernel) // stride + 1
        return size

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def backbone_state_dict(checkpoint: Mapping[str, object], source: str = "checkpoint") -> dict[str, Tensor]:
    """The trunk's entries of a ResNet-18 checkpoint: wrapper and ``module.`` prefix removed, ``fc.*``
    and ``layer4.*`` dropped. Everything else must match `ResNet18Trunk` exactly (checked on loading)."""
    for key in _WRAPPER_KEYS:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    state = {}
    for key, value in checkpoint.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; is this a state_dict?")
        for prefix in _KEY_PREFIXES:
            key = key.removeprefix(prefix)
        if not key.startswith(_HEAD_PREFIXES):
            state[key] = value
    return state


def grid_for(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Token grid (F, H, W) the skeleton makes from `frames` frames of `height` x `width` pixels."""
    return frames, ResNet18Trunk.feature_size(height), ResNet18Trunk.feature_size(width)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class LOGOFormer(nn.Module):
    """LOGO-Former for clip classification: input ``(B, T, 3, H, W)``, output logits ``(B, num_classes)``.

    Args:
        num_classes: classes of the head (7 for DFEW and FERV39K).
        num_frames, img_size: the clip shape the positional embedding is sized for (16 frames of
            112 x 112 give the paper's 16 x 7 x 7 grid); inputs must have this shape.
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
        attention: ``"logo"``, ``"full"``, ``"divided"`` or ``"spatial"`` (see the module docstring).
        window, pool: LOGO blocks' window ``(f, h, w)`` (clipped to the grid) and pooling.
        backend: op backend of the LOGO blocks (see ``logo_attn.available_backends()``).
        qkv_bias, attn_drop, proj_drop, head_drop: as in timm; ``head_drop`` is dropout before the FC.
        pos_embed_std: standard deviation of the initial positional embedding (see ``_init_embeddings``).
        backbone_weights: path of a local ResNet-18 checkpoint (torchvision or MS-Celeb-1M); its
            trunk entries are loaded strictly. Nothing is ever downloaded.
    """

    def __init__(
        self,
        num_classes: int = 7,
        num_frames: int = 16,
        img_size: int | Sequence[int] = 112,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        attention: str = "logo",
        window: Sequence[int] = (2, 7, 7),
        pool: str = "avg",
        backend: str = "auto",
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        head_drop: float = 0.0,
        pos_embed_std: float = 0.5,
        backbone_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTIONS))}, got {attention!r}")
        num_classes, num_frames = as_int(num_classes, "num_classes"), as_int(num_frames, "num_frames")
        if num_classes < 1 or num_frames < 1:
            raise ValueError(f"num_classes and num_frames must be >= 1, got {num_classes} and {num_frames}")
        backends.check_name(backend)
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.attention = attention
        self.num_classes = num_classes
        self.pos_embed_std = pos_embed_std
        self.input_shape = (num_frames, 3, height, width)
        self.grid = grid_for(num_frames, height, width)
        tokens = self.grid[0] * self.grid[1] * self.grid[2]

        self.backbone = ResNet18Trunk()
        self.embed = nn.Conv2d(ResNet18Trunk.out_channels, embed_dim, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        attn_args = dict(num_prefix_tokens=1, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        if attention == "logo":
            blocks = [
                LOGOBlock(embed_dim, num_heads, clip_window(self.grid, as_window(window)), mlp_ratio, pool,
                          backend=backend, **attn_args)
                for _ in range(depth)
            ]
        else:  # "full" and "spatial" (per-frame sequences, see forward) share the full-attention layer
            layer = DividedAttention if attention == "divided" else FullAttention
            blocks = [Block(layer(embed_dim, num_heads, **attn_args), embed_dim, mlp_ratio, proj_drop)
                      for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(head_drop)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_embeddings()
        if backbone_weights is not None:
            self.load_backbone_weights(backbone_weights)

    def _init_embeddings(self) -> None:
        # The linear layers keep PyTorch's fan-in scaled init and the positional embedding starts at
        # N(0, pos_embed_std^2): with timm's std-0.02 embedding and weights (tuned for 768-wide ViTs)
        # positions are drowned by the content at these widths, and attention that relates frames,
        # which telling their order needs, takes far longer to emerge (docs/training.md has the figures).
        nn.init.normal_(self.pos_embed, std=self.pos_embed_std)
        for tensor in (self.cls_token, self.cls_pos_embed):
            nn.init.trunc_normal_(tensor, std=0.02)

    def load_backbone_weights(self, path: str | Path) -> None:
        """Fill the ResNet trunk from a local ResNet-18 checkpoint (strict names, see `backbone_state_dict`)."""
        path = Path(path)
        checkpoint = load_torch_file(path, "backbone_weights")
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f"backbone_weights {path}: expected a state_dict, got a {type(checkpoint).__name__}")
        state = backbone_state_dict(checkpoint, str(path))
        try:
            self.backbone.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"backbone_weights {path} does not match ResNet-18 layers conv1..layer3: {error}") from None

    def features(self, clips: Tensor, cp: TimeSharding | None = None) -> Tensor:
        """Embedded grid tokens (B, F*H*W, embed_dim) with positional embedding, before the CLS token
        (with `cp`: this rank's frames in, this rank's tokens out)."""
        frames = self.input_shape[0] if cp is None else cp.local_frames()
        expected = (frames, *self.input_shape[1:])
        if not isinstance(clips, Tensor) or clips.dim() != 5 or tuple(clips.shape[1:]) != expected:
            shape = tuple(clips.shape) if isinstance(clips, Tensor) else type(clips).__name__
            where = "" if cp is None else f" (frames {cp.frame_range} of the clip's {self.input_shape[0]}: this rank's shard)"
            raise ValueError(
                f"LOGOFormer expects clips of shape (B, {', '.join(map(str, expected))}) "
                f"(num_frames, 3, img_size){where}, got {shape}"
            )
        weight_dtype = self.pos_embed.dtype
        if not clips.is_floating_point():
            raise TypeError(f"LOGOFormer expects floating-point clips (normalised pixels), got {clips.dtype}; "
                            f"convert e.g. with clips.to({weight_dtype}) / 255 and normalise")
        if clips.dtype != weight_dtype and not torch.is_autocast_enabled(clips.device.type):
            raise TypeError(f"LOGOFormer's weights are {weight_dtype} but the clips are {clips.dtype}; "
                            f"convert the clips (clips.to({weight_dtype})) or the model (model.to({clips.dtype}))")
        B, T = clips.shape[:2]
        maps = self.embed(self.backbone(clips.flatten(0, 1)))  # (B*T, D, h, w)
        tokens = maps.unflatten(0, (B, T)).permute(0, 1, 3, 4, 2).flatten(1, 3)  # row-major (F, H, W)
        return tokens + (self.pos_embed if cp is None else cp.shard(self.pos_embed))

    def forward(self, clips: Tensor, cp: TimeSharding | None = None) -> Tensor:
        """Logits (B, num_classes) of clips (B, T, 3, H, W).

        With ``cp`` (a `logo_attn.distributed.TimeSharding` of `grid`, LOGO attention only) each rank
        passes its own frames, ``cp.shard_frames(clips)``; the trunk runs on them alone (BatchNorm in
        training mode then normalises over this rank's frames: convert it to SyncBatchNorm over the
        group for the one-process statistics), the CLS token lives on rank 0, and every rank gets the
        clip's logits. Each rank's backward of a loss on them adds the loss's gradient once, so the
        group's gradients sum to ``cp.size`` times the one-process gradient, which is what DDP's mean
        over all ``data x context`` ranks turns into the mean over clips.
        """
        if cp is not None and self.attention != "logo":
            raise ValueError(f"LOGOFormer: cp= (context parallelism) needs attention='logo', not {self.attention!r}")
        tokens = self.features(clips, cp)
        B, _, D = tokens.shape
        cls = (self.cls_token + self.cls_pos_embed).expand(B, 1, D)
        if self.attention == "spatial":
            Fg, Hg, Wg = self.grid
            x = torch.cat([cls.repeat_interleave(Fg, dim=0), tokens.reshape(B * Fg, Hg * Wg, D)], dim=1)
            for block in self.blocks:
                x = block(x, (1, Hg, Wg))
            summary = x[:, 0].reshape(B, Fg, D).mean(dim=1)  # temporal mean of the per-frame CLS tokens
        elif cp is not None:
            # the prefix this rank holds: the CLS token on rank 0, an empty slice elsewhere (which still
            # gives cls_token a (zero) gradient on every rank, as DDP expects of every parameter)
            x = torch.cat([cls[:, : cp.local_prefix(1)], tokens], dim=1)
            for block in self.blocks:
                x = block(x, self.grid, cp=cp)
            summary = cp.broadcast_prefix(x, 1)[:, 0]
        else:
            x = torch.cat([cls, tokens], dim=1)
            for block in self.blocks:
                x = block(x, self.grid)
            summary = x[:, 0]
        return self.head(self.head_drop(self.norm(summary)))
