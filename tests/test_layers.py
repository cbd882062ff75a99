"""LocalGlobalAttention and LOGOBlock: the equations, prefix tokens, both pools, every backend,
gradients, state_dict round trip, torch.compile."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from logo_attn import LocalGlobalAttention, LOGOBlock
from oracle import backend_params, require


def plain_pytorch_layer(layer, x, grid):
    """Eqs. (1), (3)-(6) written with a dense same-window mask and a mean over window ids: shares
    nothing with logo_attn but the layer's parameters."""
    P, heads = layer.num_prefix_tokens, layer.num_heads
    Fg, H, W = grid
    win = [min(w, g) for w, g in zip(layer.window, grid)]
    t, y, z = (c.flatten() for c in torch.meshgrid(torch.arange(Fg), torch.arange(H), torch.arange(W), indexing="ij"))
    nh, nw = -(-H // win[1]), -(-W // win[2])
    window_id = ((t // win[0]) * nh + y // win[1]) * nw + z // win[2]

    def attend(q, k, v, mask=None):  # (B, L, dim) -> heads
        q, k, v = (s.unflatten(-1, (heads, -1)).transpose(1, 2) for s in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)

    x_prefix, x_grid = x[:, :P], x[:, P:]
    q, k, v = layer.local_qkv(layer.norm_local(x_grid)).chunk(3, dim=-1)
    same_window = window_id[:, None] == window_id[None, :]
    y_grid = x_grid + layer.local_proj(attend(q, k, v, same_window))
    if layer.pool == "avg":
        pooled = torch.stack([y_grid[:, window_id == m].mean(1) for m in range(int(window_id.max()) + 1)], dim=1)
    else:
        B, _, C = y_grid.shape
        volume = F.pad(y_grid.transpose(1, 2).reshape(B, C, Fg, H, W),
                       (0, (-W) % layer.window[2], 0, (-H) % layer.window[1], 0, (-Fg) % layer.window[0]))
        pooled = layer.pool_conv(volume).flatten(2).transpose(1, 2)
    y = torch.cat([x_prefix, y_grid], 1)
    summary = torch.cat([x_prefix, pooled], 1)
    k, v = layer.kv(layer.norm_kv(summary)).chunk(2, dim=-1)
    return y + layer.proj(attend(layer.q(layer.norm_q(y)), k, v))


@pytest.mark.parametrize("pool", ["avg", "conv"])
@pytest.mark.parametrize("prefix,grid", [(0, (4, 7, 7)), (1, (3, 5, 6)), (2, (2, 3, 4))])
def test_layer_equals_plain_pytorch(prefix, grid, pool):
    layer = LocalGlobalAttention(32, num_heads=4, window=(2, 3, 4), pool=pool, num_prefix_tokens=prefix,
                                 qkv_bias=True, backend="torch").double()
    x = torch.randn(2, prefix + math.prod(grid), 32, dtype=torch.float64)
    torch.testing.assert_close(layer(x, grid), plain_pytorch_layer(layer, x, grid))


def test_prefix_tokens_skip_local_attention():
    """A prefix token changes the grid tokens only through the global step (it belongs to no window)."""
    layer = LocalGlobalAttention(16, num_heads=2, window=(1, 2, 2), num_prefix_tokens=1, backend="torch").double()
    x = torch.randn(1, 1 + 8, 16, dtype=torch.float64, requires_grad=True)
    local_out = layer.local_proj.register_forward_hook(lambda m, i, o: setattr(layer, "_local", o))
    layer(x, (2, 2, 2))
    local_out.remove()
    (grad,) = torch.autograd.grad(layer._local.sum(), x)
    assert grad[:, 0].abs().max() == 0 and grad[:, 1:].abs().max() > 0


@pytest.mark.parametrize("backend,device", backend_params())
def test_backends_agree_with_torch(backend, device):
    require(backend, device)
    grid = (3, 5, 6)
    layer = LocalGlobalAttention(64, num_heads=4, window=(2, 4, 4), num_prefix_tokens=1, backend=backend).to(device)
    twin = LocalGlobalAttention(64, num_heads=4, window=(2, 4, 4), num_prefix_tokens=1, backend="torch").to(device)
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(2, 1 + math.prod(grid), 64, device=device, requires_grad=True)
    out, want = layer(x, grid), twin(x, grid)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=2e-5)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *layer.parameters()], dout)
    expected = torch.autograd.grad(want, [x, *twin.parameters()], dout)
    for g, w in zip(got, expected):
        torch.testing.assert_close(g, w, atol=5e-5, rtol=5e-5)


def test_every_parameter_gets_a_gradient():
    block = LOGOBlock(32, num_heads=4, window=(2, 2, 2), pool="conv", num_prefix_tokens=1, backend="torch")
    block(torch.randn(2, 1 + 2 * 4 * 4, 32), (2, 4, 4)).square().mean().backward()
    missing = [name for name, p in block.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing, f"no gradient reaches {missing}"


def test_state_dict_round_trip():
    block = LOGOBlock(32, num_heads=4, window=(2, 2, 2), num_prefix_tokens=1).eval()
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    buffer.seek(0)
    clone = LOGOBlock(32, num_heads=4, window=(2, 2, 2), num_prefix_tokens=1).eval()
    clone.load_state_dict(torch.load(buffer))
    x = torch.randn(2, 1 + 3 * 4 * 4, 32)
    assert torch.equal(block(x, (3, 4, 4)), clone(x, (3, 4, 4)))


def test_block_is_eq7():
    block = LOGOBlock(16, num_heads=2, window=(1, 2, 2), backend="torch").double()
    x = torch.randn(1, 8, 16, dtype=torch.float64)
    y = block.attn(x, (2, 2, 2))
    torch.testing.assert_close(block(x, (2, 2, 2)), y + block.mlp(block.norm(y)))


@pytest.mark.parametrize("backend,device", backend_params())
def test_compiles_fullgraph(backend, device):
    require(backend, device)
    torch._dynamo.reset()
    block = LOGOBlock(32, num_heads=2, window=(2, 2, 2), num_prefix_tokens=1, backend=backend).to(device)
    compiled = torch.compile(block, fullgraph=True)
    x = torch.randn(2, 1 + 2 * 4 * 4, 32, device=device, requires_grad=True)
    out = compiled(x, (2, 4, 4))
    torch.testing.assert_close(out, block(x, (2, 4, 4)), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_attention_dropout_warns_for_kernel_backends():
    with pytest.warns(UserWarning, match="attn_drop=0.5: backend 'cpu' has no attention dropout"):
        LocalGlobalAttention(16, num_heads=2, window=(1, 2, 2), attn_drop=0.5, backend="cpu")


def test_attention_dropout_acts_only_while_training():
    layer = LocalGlobalAttention(16, num_heads=2, window=(1, 2, 2), attn_drop=0.5)
    plain = LocalGlobalAttention(16, num_heads=2, window=(1, 2, 2))
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(layer.eval()(x, (2, 2, 2)), plain.eval()(x, (2, 2, 2)))
    layer.train()
    torch.manual_seed(1)
    first = layer(x, (2, 2, 2))
    torch.manual_seed(2)
    assert not torch.equal(first, layer(x, (2, 2, 2))), "attention dropout had no effect while training"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(dim=30, num_heads=4), "divisible by num_heads"),
        (dict(dim=32, pool="max"), "pool must be 'avg' or 'conv'"),
        (dict(dim=32, window=(2, 0, 2)), "window \\(f, h, w\\) entries must be >= 1"),
        (dict(dim=32, backend="gpu"), "backend must be one of"),
        (dict(dim=32, num_prefix_tokens=-1), "num_prefix_tokens must be >= 0"),
    ],
)
def test_bad_construction_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        LocalGlobalAttention(**kwargs)


def test_bad_forward_arguments():
    layer = LocalGlobalAttention(16, num_heads=2, window=(1, 2, 2), num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"x must be \(B, num_prefix_tokens \+ F\*H\*W, dim\) = \(B, 1 \+ 12, 16\) "
                                         r"for grid \(3, 2, 2\), got \(1, 9, 16\)"):
        layer(torch.randn(1, 9, 16), (3, 2, 2))
    with pytest.raises(ValueError, match="x must be"):
        layer(torch.randn(9, 16), (2, 2, 2))


@pytest.mark.parametrize("pool", ["avg", "conv"])
def test_empty_batch_forward_and_backward(pool):
    """An empty batch (the last, filtered batch of an epoch) passes forward and backward."""
    layer = LocalGlobalAttention(16, num_heads=2, window=(1, 2, 2), pool=pool, num_prefix_tokens=1)
    x = torch.randn(0, 1 + 12, 16, requires_grad=True)
    out = layer(x, (3, 2, 2))
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape and all(p.grad is not None and not p.grad.any() for p in layer.parameters())
