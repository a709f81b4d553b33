"""Every alignment head in HEADS: shapes, masks, gradients, no NaN, pooled and token inputs; the CBMF defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from embedcache.fingerprint import to_plain
from embedcache.fusion.heads import HEADS, Batch, HeadSpec, create_head
from embedcache.fusion.heads.base import ContrastiveHead
from embedcache.fusion.heads.cbmf import FUSIONS, CBMFHead, _attend
from embedcache.registry import UnknownNameError

# Every registered alignment head (a new one is tested for free); classifier heads: test_heads_mlp.py.
ALIGNMENT = [n for n in HEADS.names() if issubclass(HEADS.get(n), ContrastiveHead)]
CBMF = [n for n in ALIGNMENT if issubclass(HEADS.get(n), CBMFHead)]
SMALL = {"dim": 32, "ff_dim": 64}  # fast; the defaults are checked separately


def _head(name: str, dims: tuple[int, ...] = (12, 8), **options: object) -> nn.Module:
    torch.manual_seed(0)
    small = {k: v for k, v in SMALL.items() if k in {f.name for f in dataclasses.fields(HEADS.get(name).Cfg)}}
    return create_head(HeadSpec.create(name, dims, ("image", "text")[: len(dims)], **{**small, **options}))


def _tokens(b: int, t: int, d: int, lengths: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.randn(b, t, d)
    if lengths is None:
        return x, None
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return x, mask


def test_the_registry_holds_the_six_fusions_and_the_baseline() -> None:
    assert {f"cbmf-{f}" for f in ("add", "mul", "concat", "additive", "general", "dot")} <= set(HEADS.names())
    assert "convirt-frozen" in HEADS
    with pytest.raises(UnknownNameError, match="cbmf-add, cbmf-additive"):
        HEADS.get("cbmf-ad")


@pytest.mark.parametrize("name", ALIGNMENT)
@pytest.mark.parametrize("tokens", [False, True])
def test_shapes_gradients_and_finite_loss(name: str, tokens: bool) -> None:
    head = _head(name).train()
    b = 6
    if tokens:  # ragged text (masked), fixed-length image tokens (no mask)
        inputs = [_tokens(b, 5, 12), _tokens(b, 4, 8, [4, 1, 2, 3, 4, 2])]
    else:
        inputs = [(torch.randn(b, 1, 12), None), (torch.randn(b, 1, 8), None)]
    for m, (x, mask) in enumerate(inputs):
        assert head.encode(m, x, mask).shape == (b, head.out_dim)
    loss = head.loss(Batch(inputs, torch.arange(b).repeat(2, 1).T))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", ALIGNMENT)
def test_padding_is_ignored(name: str) -> None:
    head = _head(name).eval()
    x, mask = _tokens(3, 6, 8, [2, 6, 4])
    with torch.no_grad():
        full = head.encode(1, x, mask)
        noisy = x.clone()
        noisy[~mask] = 1e3  # garbage in the padding must not change anything
        assert torch.allclose(head.encode(1, noisy, mask), full, atol=1e-5)
        alone = head.encode(1, x[:1, :2], None)  # the first row without its padding
        assert torch.allclose(alone, full[:1], atol=1e-5)


@pytest.mark.parametrize("name", ALIGNMENT)
def test_pooled_is_a_one_token_sequence(name: str) -> None:
    head = _head(name).eval()
    x = torch.randn(4, 12)
    with torch.no_grad():
        assert torch.allclose(head.encoder(0)(x), head.encode(0, x.unsqueeze(1)), atol=1e-6)


@pytest.mark.parametrize("name", CBMF)
def test_context_tells_the_modalities_apart(name: str) -> None:
    head = _head(name, dims=(8, 8)).eval()
    with torch.no_grad():
        head.projections[1].load_state_dict(head.projections[0].state_dict())  # same projection on both sides
        x = torch.randn(4, 3, 8)
        assert not torch.allclose(head.encode(0, x), head.encode(1, x), atol=1e-4)


@pytest.mark.parametrize("name", CBMF)
def test_encoding_all_sides_at_once_equals_one_by_one(name: str) -> None:
    head = _head(name).eval()
    inputs = [_tokens(3, 4, 12), _tokens(3, 4, 8)]  # same token count, no masks: one shared pass
    ragged = [_tokens(3, 4, 12), _tokens(3, 5, 8, [5, 1, 3])]  # masked side: its own pass
    with torch.no_grad():
        for batch in (inputs, ragged):
            together = head.encode_all(batch)
            for m, (x, mask) in enumerate(batch):
                assert torch.allclose(together[m], head.encode(m, x, mask), atol=1e-5)


def test_attention_weights_ignore_padding_and_sum_to_one() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, 9.0, 9.0]])
    values = torch.eye(3).expand(2, 3, 3)  # value t = one-hot t, so the output is the weight vector
    mask = torch.tensor([[True, True, True], [True, False, False]])
    w = _attend(scores, values, mask)
    assert torch.allclose(w.sum(dim=1), torch.ones(2))
    assert torch.allclose(w[1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(w[0], torch.softmax(scores[0], dim=0))


def test_more_than_two_modalities_each_with_its_own_context() -> None:
    torch.manual_seed(0)
    head = create_head(HeadSpec.create("cbmf-add", (12, 8, 6), ("image", "text", "text"), **SMALL))
    assert head.context.vectors.shape == (3, 3)
    inputs = [(torch.randn(5, 1, d), None) for d in (12, 8, 6)]
    loss = head.loss(Batch(inputs, torch.arange(5).repeat(3, 1).T))
    loss.backward()
    assert all(p.grad is not None for p in head.projections[2].parameters())
    assert all(float(p.grad.abs().sum()) > 0 for p in head.projections[2].parameters() if p.ndim == 2)


def test_cbmf_defaults_follow_the_authors_code() -> None:
    head = create_head(HeadSpec.create("cbmf-add", (1280, 384), ("image", "text")))
    assert isinstance(head, CBMFHead) and head.out_dim == 256
    proj = head.projections[0]
    assert (proj.fc1.in_features, proj.fc1.out_features, proj.drop.p, proj.residual) == (1280, 256, 0.1, False)
    linears = [m for m in head.context.g if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 64), (64, 128), (128, 256)]
    assert isinstance(head.context.g[-1], nn.LayerNorm)
    (block,) = head.dfe.blocks
    assert (block.self_attn.num_heads, block.linear1.out_features, block.dropout.p) == (4, 2048, 0.1)
    assert float(head.criterion.scale().detach()) == pytest.approx(2.718281828 ** 0.07)
    assert head.cfg.targets == "hard"


def test_spec_round_trips_through_json_and_rejects_unknown_options() -> None:
    spec = HeadSpec.create("cbmf-dot", (12, 8), ("image", "text"), context_hidden=[16, 32], targets="soft")
    assert spec.options == (("context_hidden", (16, 32)), ("targets", "soft"))
    assert HeadSpec.from_plain(to_plain(spec)) == spec
    assert HeadSpec.create("cbmf-add", (4, 4), dim=256).options == ()  # defaults are not recorded
    with pytest.raises(ValueError, match="known options: concat_context, context_dim"):
        HeadSpec.create("cbmf-add", (4, 4), dimm=3)


def test_equal_seeds_build_equal_heads() -> None:
    a, b = _head("cbmf-general"), _head("cbmf-general")
    for (_, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q)
    torch.manual_seed(1)  # and the seed matters: another one gives other weights
    c = create_head(a.spec)
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_every_fusion_has_a_head() -> None:
    assert {f"cbmf-{f}" for f in FUSIONS.names()} <= set(HEADS.names())


def test_projection_has_no_residual_by_default_as_the_authors() -> None:
    # Authors' ProjectionHead (text_image/baseline.py): Linear, GELU, Linear, Dropout, LayerNorm; no skip.
    for name in ("cbmf-add", "convirt-frozen"):
        proj = _head(name).projections[0].eval()
        x = torch.randn(5, 3, 12)
        with torch.no_grad():
            plain = proj.norm(proj.fc2(nn.functional.gelu(proj.fc1(x))))
            skip = proj.norm(proj.fc1(x) + proj.fc2(nn.functional.gelu(proj.fc1(x))))
            assert torch.allclose(proj(x), plain, atol=1e-6) and not torch.allclose(plain, skip, atol=1e-3)
        residual = _head(name, projection_residual=True).projections[0].eval()
        with torch.no_grad():
            assert torch.allclose(residual(x), skip, atol=1e-6)  # the simple-CLIP form, as an option


def test_concat_fusion_is_the_authors_266_wide_mlp_on_its_own_10_d_context() -> None:
    head = create_head(HeadSpec.create("cbmf-concat", (768, 768), ("text", "image")))
    g = head.context.g
    assert [(m.in_features, m.out_features) for m in g if isinstance(m, nn.Linear)] == [(3, 10)]
    assert isinstance(g[-1], nn.LayerNorm) and g[-1].normalized_shape == (10,)
    mlp = head.fusion.mlp
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [(266, 266), (266, 256)]
    assert isinstance(mlp[1], nn.ReLU)
    x, c = torch.randn(2, 3, 256), head.context(1)  # (10,)
    with torch.no_grad():
        want = x + mlp(torch.cat([x, c.expand(2, 3, 10)], dim=-1))  # added back to x
        assert torch.allclose(head.fusion(x, c, None), want, atol=1e-6)


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_the_context_gets_a_gradient_in_every_fusion(fusion: str) -> None:
    # Several tokens per item: attention fusions (additive, general, dot) take a softmax over the tokens.
    head = _head(f"cbmf-{fusion}").train()
    inputs = [_tokens(6, 4, 12), _tokens(6, 5, 8, [5, 2, 3, 4, 5, 1])]
    head.loss(Batch(inputs, torch.arange(6).repeat(2, 1).T)).backward()
    grad = head.context.vectors.grad  # (M, 3): one learned context per modality
    assert grad is not None and (grad.abs().sum(dim=1) > 0).all(), fusion


@pytest.mark.parametrize("fusion", ["additive", "general", "dot"])
def test_attention_fusions_ignore_the_context_with_one_token(fusion: str) -> None:
    # Softmax over one token is 1, so the context query changes nothing: pooled inputs make these fusions `add`
    # without a context. Demo twins and tests of these fusions therefore use token sequences.
    head = _head(f"cbmf-{fusion}").train()
    inputs = [(torch.randn(6, 1, 12), None), (torch.randn(6, 1, 8), None)]
    head.loss(Batch(inputs, torch.arange(6).repeat(2, 1).T)).backward()
    grad = head.context.vectors.grad
    assert grad is None or float(grad.abs().max()) < 1e-6
