"""CBMF's one-token shortcut (`OneTokenEncoderLayer`) against the stock nn.TransformerEncoderLayer: the same
function for one-token inputs (eval and train, values and gradients), torch's own path otherwise, the same
state_dict, and attention dropout acting per head on the single attention weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from embedcache.fusion.heads import Batch, HeadSpec, create_head
from embedcache.fusion.heads.cbmf import OneTokenEncoderLayer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(32, 4, 64), (256, 4, 2048)]  # (d, heads, feed-forward): small, and the CBMF defaults


def _pair(d: int, heads: int, ff: int, dropout: float = 0.0) -> tuple[nn.TransformerEncoderLayer, OneTokenEncoderLayer]:
    torch.manual_seed(0)
    stock = nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True)
    with torch.no_grad():  # non-trivial biases, so a dropped bias slice would show
        for p in stock.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast = OneTokenEncoderLayer(d, heads, ff, dropout, batch_first=True)
    fast.load_state_dict(stock.state_dict())
    return stock, fast


def _count_attention_calls(layer: nn.TransformerEncoderLayer) -> list[int]:
    calls = [0]
    layer.self_attn.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _grads(layer: nn.Module, x: torch.Tensor, out: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    x.grad = None
    (out * w).sum().backward()
    grads = {k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in layer.named_parameters()}
    return {**grads, "input": x.grad.clone()}


@pytest.mark.parametrize(("d", "heads", "ff"), SIZES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_one_token_equals_the_stock_layer_values_and_gradients(d: int, heads: int, ff: int, mode: str) -> None:
    stock, fast = _pair(d, heads, ff, dropout=0.0)
    stock.train(mode == "train"), fast.train(mode == "train")
    calls = _count_attention_calls(fast)  # a hook also keeps eval mode off torch's inference kernel
    x = torch.randn(16, 1, d, requires_grad=True)
    w = torch.randn(16, 1, d)
    a, b = stock(x), fast(x)
    assert calls[0] == 0, "the shortcut was not taken"
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    ga, gb = _grads(stock, x, a, w), _grads(fast, x, b, w)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], atol=1e-5, rtol=1e-4, msg=k)
    # query and key projections cannot matter with one key: zero gradient (the stock kernel's is rounding noise)
    assert gb["self_attn.in_proj_weight"][: 2 * d].abs().max() == 0
    assert ga["self_attn.in_proj_weight"][: 2 * d].abs().max() < 1e-5 * ga["self_attn.in_proj_weight"].abs().max()


@pytest.mark.parametrize(("d", "heads", "ff"), SIZES)
def test_eval_without_grad_keeps_torchs_inference_kernel(d: int, heads: int, ff: int) -> None:
    stock, fast = _pair(d, heads, ff, dropout=0.1)
    stock.eval(), fast.eval()
    seen: list[int] = []
    fast._sa_block = lambda *a, **k: seen.append(1) or OneTokenEncoderLayer._sa_block(fast, *a, **k)
    x = torch.randn(16, 1, d)
    with torch.inference_mode():
        a, b = stock(x), fast(x)
    assert not seen, "eval without grad should take torch._transformer_encoder_layer_fwd, not _sa_block"
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", ["tokens", "masked", "one-token-masked"])
def test_multi_token_and_masked_inputs_equal_the_stock_layer(mode: str, case: str) -> None:
    """Token sequences take the direct path (one in-projection, SDPA with an additive padding mask, no call of
    the self_attn module) and compute the stock layer's function: values and gradients."""
    stock, fast = _pair(32, 4, 64, dropout=0.0)
    stock.train(mode == "train"), fast.train(mode == "train")
    calls = _count_attention_calls(fast)
    t = 1 if case == "one-token-masked" else 7
    x = torch.randn(8, t, 32, requires_grad=True)
    pad = None if case == "tokens" else torch.arange(t).unsqueeze(0) >= torch.randint(1, t + 1, (8, 1))
    a, b = stock(x, src_key_padding_mask=pad), fast(x, src_key_padding_mask=pad)
    assert calls[0] == 0, "token sequences should take the direct SDPA path"
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(a)
    ga, gb = _grads(stock, x, a, w), _grads(fast, x, b, w)
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], atol=1e-5, rtol=1e-4, msg=k)


def test_an_explicit_attention_mask_takes_the_stock_path() -> None:
    stock, fast = _pair(32, 4, 64, dropout=0.0)
    calls = _count_attention_calls(fast)
    x = torch.randn(4, 5, 32)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    torch.testing.assert_close(fast(x, src_mask=causal), stock(x, src_mask=causal), atol=1e-6, rtol=1e-6)
    assert calls[0] == 1


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_attention_dropout_keeps_or_zeroes_each_head_as_the_stock_layer_does(p: float) -> None:
    """Attention dropout on one key drops the single weight: per (item, head) the attention output is the
    whole value scaled by 1 / (1 - p), or zero, with probability p - for the stock layer and the shortcut."""
    d, heads, b = 32, 4, 4096
    hd = d // heads
    x = torch.randn(b, 1, d)
    kept = {}
    for layer in _pair(d, heads, 64, dropout=p):
        layer.train()
        layer.dropout1 = nn.Identity()  # only the attention dropout is under test
        with torch.no_grad():  # out_proj = identity, so the block's output is the per-head attended value
            layer.self_attn.out_proj.weight.copy_(torch.eye(d))
            layer.self_attn.out_proj.bias.zero_()
            v = torch.nn.functional.linear(x, layer.self_attn.in_proj_weight[2 * d :],
                                           layer.self_attn.in_proj_bias[2 * d :]).view(b, heads, hd)
            torch.manual_seed(1)
            out = layer._sa_block(x, None, None).view(b, heads, hd)
        zero = out.abs().amax(-1) == 0
        full = torch.isclose(out, v / (1 - p), atol=1e-5, rtol=1e-5).all(-1)
        assert (zero | full).all(), "each head must be kept whole (scaled by 1 / (1 - p)) or zeroed"
        kept[type(layer).__name__] = full.float().mean().item()
    for name, frac in kept.items():  # 4096 x 4 draws: 5 sigma is < 0.04
        assert abs(frac - (1 - p)) < 0.04, (name, frac)


def _head_with_stock_layers(spec: HeadSpec) -> nn.Module:
    head = create_head(spec)
    cfg = head.cfg
    for i in range(len(head.dfe.blocks)):
        head.dfe.blocks[i] = nn.TransformerEncoderLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                                        batch_first=True)
    return head


def test_a_stock_layer_checkpoint_loads_and_computes_the_same() -> None:
    spec = HeadSpec.create("cbmf-add", (12, 8), ("image", "text"), dim=32, ff_dim=64, dropout=0.0)
    torch.manual_seed(0)
    old = _head_with_stock_layers(spec)
    assert type(old.dfe.blocks[0]) is nn.TransformerEncoderLayer
    new = create_head(spec)
    assert isinstance(new.dfe.blocks[0], OneTokenEncoderLayer)
    assert new.state_dict().keys() == old.state_dict().keys()
    new.load_state_dict(old.state_dict(), strict=True)
    old.load_state_dict(new.state_dict(), strict=True)  # and back
    pooled = [(torch.randn(10, 1, 12), None), (torch.randn(10, 1, 8), None)]
    batch = Batch(pooled, torch.arange(10).repeat(2, 1).T)
    for mode in (True, False):
        old.train(mode), new.train(mode)
        for h in (old, new):
            h.zero_grad(set_to_none=True)
        la, lb = old.loss(batch), new.loss(batch)
        torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
        la.backward(), lb.backward()
        for (k, pa), (_, pb) in zip(old.named_parameters(), new.named_parameters(), strict=True):
            ga = torch.zeros_like(pa) if pa.grad is None else pa.grad
            gb = torch.zeros_like(pb) if pb.grad is None else pb.grad
            torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-4, msg=k)
    with torch.inference_mode():
        old.eval(), new.eval()
        for m, (x, _) in enumerate(pooled):
            torch.testing.assert_close(new.encode(m, x), old.encode(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["add", "additive", "concat"])
def test_a_stock_layer_head_and_the_new_one_agree_on_ragged_tokens(fusion: str) -> None:
    """The whole head on the paper's kind of input (a fixed image grid, ragged masked captions), train mode
    without dropout: the stock torch layer and this one give the same loss and gradients to 1e-5."""
    spec = HeadSpec.create(f"cbmf-{fusion}", (24, 16), ("image", "text"), dim=32, ff_dim=64, dropout=0.0)
    torch.manual_seed(0)
    old = _head_with_stock_layers(spec)
    new = create_head(spec)
    new.load_state_dict(old.state_dict(), strict=True)
    b = 12
    lengths = torch.randint(2, 9, (b,))
    mask = torch.arange(8).unsqueeze(0) < lengths.unsqueeze(1)  # (B, 8)
    batch = Batch([(torch.randn(b, 10, 24), None), (torch.randn(b, 8, 16), mask)], torch.arange(b).repeat(2, 1).T)
    old.train(), new.train()
    la, lb = old.loss(batch), new.loss(batch)
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    la.backward(), lb.backward()
    for (k, pa), (_, pb) in zip(old.named_parameters(), new.named_parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-5, rtol=1e-4, msg=k)
