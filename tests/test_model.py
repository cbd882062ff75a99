"""LOGOFormer and its baselines: shapes, gradients, torchvision parameter names, weight loading, variants."""

import pytest
import torch
from torch import nn

from logo_attn import LOGOFormer
from logo_attn.logoformer.model import ResNet18Trunk, backbone_state_dict, grid_for

# The 122 entries of torchvision.models.resnet18().state_dict(), in order, as published by torchvision.
TORCHVISION_RESNET18_KEYS = """
conv1.weight bn1.weight bn1.bias bn1.running_mean bn1.running_var bn1.num_batches_tracked
layer1.0.conv1.weight layer1.0.bn1.weight layer1.0.bn1.bias layer1.0.bn1.running_mean layer1.0.bn1.running_var
layer1.0.bn1.num_batches_tracked layer1.0.conv2.weight layer1.0.bn2.weight layer1.0.bn2.bias
layer1.0.bn2.running_mean layer1.0.bn2.running_var layer1.0.bn2.num_batches_tracked
layer1.1.conv1.weight layer1.1.bn1.weight layer1.1.bn1.bias layer1.1.bn1.running_mean layer1.1.bn1.running_var
layer1.1.bn1.num_batches_tracked layer1.1.conv2.weight layer1.1.bn2.weight layer1.1.bn2.bias
layer1.1.bn2.running_mean layer1.1.bn2.running_var layer1.1.bn2.num_batches_tracked
layer2.0.conv1.weight layer2.0.bn1.weight layer2.0.bn1.bias layer2.0.bn1.running_mean layer2.0.bn1.running_var
layer2.0.bn1.num_batches_tracked layer2.0.conv2.weight layer2.0.bn2.weight layer2.0.bn2.bias
layer2.0.bn2.running_mean layer2.0.bn2.running_var layer2.0.bn2.num_batches_tracked
layer2.0.downsample.0.weight layer2.0.downsample.1.weight layer2.0.downsample.1.bias
layer2.0.downsample.1.running_mean layer2.0.downsample.1.running_var layer2.0.downsample.1.num_batches_tracked
layer2.1.conv1.weight layer2.1.bn1.weight layer2.1.bn1.bias layer2.1.bn1.running_mean layer2.1.bn1.running_var
layer2.1.bn1.num_batches_tracked layer2.1.conv2.weight layer2.1.bn2.weight layer2.1.bn2.bias
layer2.1.bn2.running_mean layer2.1.bn2.running_var layer2.1.bn2.num_batches_tracked
layer3.0.conv1.weight layer3.0.bn1.weight layer3.0.bn1.bias layer3.0.bn1.running_mean layer3.0.bn1.running_var
layer3.0.bn1.num_batches_tracked layer3.0.conv2.weight layer3.0.bn2.weight layer3.0.bn2.bias
layer3.0.bn2.running_mean layer3.0.bn2.running_var layer3.0.bn2.num_batches_tracked
layer3.0.downsample.0.weight layer3.0.downsample.1.weight layer3.0.downsample.1.bias
layer3.0.downsample.1.running_mean layer3.0.downsample.1.running_var layer3.0.downsample.1.num_batches_tracked
layer3.1.conv1.weight layer3.1.bn1.weight layer3.1.bn1.bias layer3.1.bn1.running_mean layer3.1.bn1.running_var
layer3.1.bn1.num_batches_tracked layer3.1.conv2.weight layer3.1.bn2.weight layer3.1.bn2.bias
layer3.1.bn2.running_mean layer3.1.bn2.running_var layer3.1.bn2.num_batches_tracked
layer4.0.conv1.weight layer4.0.bn1.weight layer4.0.bn1.bias layer4.0.bn1.running_mean layer4.0.bn1.running_var
layer4.0.bn1.num_batches_tracked layer4.0.conv2.weight layer4.0.bn2.weight layer4.0.bn2.bias
layer4.0.bn2.running_mean layer4.0.bn2.running_var layer4.0.bn2.num_batches_tracked
layer4.0.downsample.0.weight layer4.0.downsample.1.weight layer4.0.downsample.1.bias
layer4.0.downsample.1.running_mean layer4.0.downsample.1.running_var layer4.0.downsample.1.num_batches_tracked
layer4.1.conv1.weight layer4.1.bn1.weight layer4.1.bn1.bias layer4.1.bn1.running_mean layer4.1.bn1.running_var
layer4.1.bn1.num_batches_tracked layer4.1.conv2.weight layer4.1.bn2.weight layer4.1.bn2.bias
layer4.1.bn2.running_mean layer4.1.bn2.running_var layer4.1.bn2.num_batches_tracked
fc.weight fc.bias
""".split()

# A few published shapes (torchvision resnet18), including the stride-2 projections.
TORCHVISION_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.0.conv1.weight": (256, 128, 3, 3),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer3.0.downsample.1.running_var": (256,),
    "bn1.num_batches_tracked": (),
}
HEAD_SHAPES = {"fc.weight": (1000, 512), "fc.bias": (1000,)}

TINY = dict(num_classes=5, num_frames=4, img_size=32, embed_dim=32, depth=2, num_heads=4, window=(2, 2, 2))


def test_trunk_names_are_torchvisions_up_to_layer3():
    ours = list(ResNet18Trunk().state_dict())
    expected = [k for k in TORCHVISION_RESNET18_KEYS if not k.startswith(("layer4.", "fc."))]
    assert ours == expected  # same names, same order
    state = ResNet18Trunk().state_dict()
    for key, shape in TORCHVISION_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    model_keys = LOGOFormer(**TINY).state_dict()
    assert all(f"backbone.{k}" in model_keys for k in expected)


def _fake_torchvision_checkpoint(seed: int) -> dict:
    """Random tensors under every torchvision key (trunk shapes from the published layout)."""
    g = torch.Generator().manual_seed(seed)
    trunk = ResNet18Trunk().state_dict()
    state = {}
    for key in TORCHVISION_RESNET18_KEYS:
        if key in trunk:
            shape = trunk[key].shape
        elif key in HEAD_SHAPES:
            shape = HEAD_SHAPES[key]
        else:  # layer4: 512 channels
            shape = (512,) if not key.endswith("weight") or ".bn" in key or "downsample.1" in key else (512, 512, 3, 3)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.mark.parametrize("wrap", ["plain", "ms_celeb"])
def test_backbone_weights_load_strictly(tmp_path, wrap):
    checkpoint = _fake_torchvision_checkpoint(1)
    if wrap == "ms_celeb":  # {"state_dict": {"module.conv1.weight": ...}} with a face-identity fc
        inner = {f"module.{k}": v for k, v in checkpoint.items()}
        inner["module.fc.weight"] = torch.randn(8631, 512)
        checkpoint = {"state_dict": inner, "epoch": 30}
    path = tmp_path / "resnet18.pth"
    torch.save(checkpoint, path)
    model = LOGOFormer(**TINY, backbone_weights=path)
    source = _fake_torchvision_checkpoint(1)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        LOGOFormer(**TINY, backbone_weights=tmp_path / "missing.pth")
    broken = _fake_torchvision_checkpoint(2)
    del broken["layer2.1.conv2.weight"]
    broken["layer3.9.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"(?s)broken\.pth.*Missing.*(layer2\.1\.conv2\.weight|layer3\.9)"):
        LOGOFormer(**TINY, backbone_weights=path)


def test_old_checkpoint_without_num_batches_tracked_loads(tmp_path):
    checkpoint = {k: v for k, v in _fake_torchvision_checkpoint(3).items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(checkpoint, path)
    model = LOGOFormer(**TINY, backbone_weights=path)
    assert torch.equal(model.backbone.conv1.weight, checkpoint["conv1.weight"])


def test_backbone_state_dict_unwraps_and_drops_head():
    state = backbone_state_dict({"model": {"module.conv1.weight": torch.ones(1), "module.fc.bias": torch.ones(1)}})
    assert list(state) == ["conv1.weight"]
    with pytest.raises(ValueError, match="not a tensor"):
        backbone_state_dict({"conv1.weight": [1, 2]}, "x.pth")


@pytest.mark.parametrize("frames, height, width", [(16, 112, 112), (8, 32, 32), (8, 48, 48), (3, 100, 60), (1, 17, 15)])
def test_grid_matches_the_trunk_output(frames, height, width):
    out = ResNet18Trunk().eval()(torch.zeros(1, 3, height, width))
    assert grid_for(frames, height, width) == (frames, *out.shape[-2:])


def test_paper_defaults():
    model = LOGOFormer()
    assert model.grid == (16, 7, 7) and model.input_shape == (16, 3, 112, 112)
    assert len(model.blocks) == 4 and model.head.out_features == 7
    attn = model.blocks[0].attn
    assert attn.window == (2, 7, 7) and attn.num_heads == 8 and attn.head_dim == 32 and attn.num_prefix_tokens == 1
    assert model.pos_embed.shape == (1, 16 * 7 * 7, 256)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 16, 3, 112, 112)).shape == (1, 7)


@pytest.mark.parametrize("attention", ["logo", "full", "divided", "spatial"])
def test_variant_shapes_and_gradients(attention):
    model = LOGOFormer(**TINY, attention=attention)
    clips = torch.randn(3, 4, 3, 32, 32)
    logits = model(clips)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    logits.logsumexp(dim=1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_backend_reaches_the_logo_blocks():
    model = LOGOFormer(**TINY, backend="torch")
    assert all(block.attn.backend == "torch" for block in model.blocks)
    assert LOGOFormer(**{**TINY, "window": (8, 9, 9)}).blocks[0].attn.window == (4, 2, 2)  # clipped to the grid


def _block_outputs(model, clips):
    seen = []
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    model(clips)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("attention, mixes_frames", [("spatial", False), ("full", True), ("divided", True), ("logo", True)])
def test_only_spatial_keeps_frames_apart(attention, mixes_frames):
    # Change frame 3 only: in "spatial" the tokens of frames 0-2 must not move; every other variant mixes time.
    model = LOGOFormer(**TINY, attention=attention).eval()
    clips = torch.randn(2, 4, 3, 32, 32)
    other = clips.clone()
    other[:, 3] = torch.randn(2, 3, 32, 32)
    a, b = _block_outputs(model, clips), _block_outputs(model, other)
    if attention == "spatial":  # (B*F, 1 + H*W, D): frames are separate sequences
        a, b = a.view(2, 4, -1, 32)[:, :3], b.view(2, 4, -1, 32)[:, :3]
    else:  # (B, 1 + F*H*W, D): the first frame's tokens and the CLS token
        a, b = a[:, : 1 + 4], b[:, : 1 + 4]
    assert (not torch.allclose(a, b, atol=1e-6)) == mixes_frames


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(attention="windowed"), ValueError, "attention must be one of"),
    (dict(backend="fast"), ValueError, "backend must be one of"),
    (dict(num_classes=0), ValueError, "num_classes"),
    (dict(num_classes=2.5), TypeError, "num_classes must be an int"),
    (dict(num_heads=0), ValueError, "num_heads must be >= 1"),
])
def test_bad_configuration(kwargs, error, message):
    with pytest.raises(error, match=message):
        LOGOFormer(**{**TINY, **kwargs})


def test_wrong_input_shape_names_the_expected_shape():
    model = LOGOFormer(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 4, 3, 32, 32\)"):
        model(torch.randn(2, 4, 3, 48, 48))
    with pytest.raises(ValueError, match="expects clips"):
        model(torch.randn(4, 3, 32, 32))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64, torch.int64])
def test_clip_dtype_is_checked_with_the_fix(dtype):
    model = LOGOFormer(**TINY)
    clips = (torch.rand(2, 4, 3, 32, 32) * 255).to(dtype)
    with pytest.raises(TypeError, match=r"(floating-point clips|weights are torch.float32 but the clips are torch.float64)"):
        model(clips)
    if dtype == torch.float64:  # the fix the message names works
        assert model.double()(clips).dtype == torch.float64


@pytest.mark.parametrize("attention", ["logo", "divided", "full", "spatial"])
def test_empty_batch_forward_and_backward(attention):
    model = LOGOFormer(**{**TINY, "attention": attention})
    logits = model(torch.randn(0, 4, 3, 32, 32))
    assert logits.shape == (0, 5)
    logits.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())

