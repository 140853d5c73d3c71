"""Fusion blocks: identity at init, text matters once the gates open, no NaN from empty captions."""
import pytest
import torch

from mmseg_text.models import FiLM, GatedCrossAttention, TextContext, iter_gates

from .conftest import TEXT_DIM, make_context


def _open(module, value=1.0):
    with torch.no_grad():
        for gate in iter_gates(module):
            gate.fill_(value)


def test_text_context_validates_shapes():
    ctx = make_context(2)
    with pytest.raises(ValueError, match="mask must be bool"):
        TextContext(ctx.tokens, ctx.mask.float(), ctx.pooled)
    with pytest.raises(ValueError, match="pooled must be"):
        TextContext(ctx.tokens, ctx.mask, ctx.pooled[:1])
    with pytest.raises(ValueError, match="class_embeddings must be"):
        TextContext(ctx.tokens, ctx.mask, ctx.pooled, torch.zeros(29, TEXT_DIM + 1))


def test_text_context_to_and_expand():
    ctx = make_context(1)
    moved = ctx.to("cpu")
    assert moved is not ctx and torch.equal(moved.tokens, ctx.tokens) and moved.class_embeddings is not None
    wide = ctx.expand(3)
    assert wide.tokens.shape[0] == wide.mask.shape[0] == wide.pooled.shape[0] == 3
    assert torch.equal(wide.tokens[2], ctx.tokens[0])
    with pytest.raises(ValueError, match="batch 2 but the images have batch 3"):
        make_context(2).expand(3)


@pytest.mark.parametrize("ff_mult", [0, 1, 4])
def test_cross_attention_is_identity_at_init_and_reads_text_when_open(ff_mult):
    block = GatedCrossAttention(8, TEXT_DIM, heads=2, ff_mult=ff_mult)
    assert [g.item() for g in iter_gates(block)] == [0.0] * (2 if ff_mult else 1)
    x = torch.randn(2, 10, 8)
    a, b = make_context(2, seed=1), make_context(2, seed=2)
    assert torch.equal(block(x, a.tokens, a.mask), x)
    _open(block)
    out_a, out_b = block(x, a.tokens, a.mask), block(x, b.tokens, b.mask)
    assert not torch.allclose(out_a, x)
    assert (out_a - out_b).abs().max() > 1e-3


def test_cross_attention_respects_the_padding_mask():
    block = GatedCrossAttention(8, TEXT_DIM, heads=2)
    _open(block)
    x = torch.randn(1, 5, 8)
    ctx = make_context(1, length=6)
    mask = torch.tensor([[True, True, True, False, False, False]])
    changed = ctx.tokens.clone()
    changed[:, 3:] = 100.0  # padding: must not be read
    assert torch.allclose(block(x, ctx.tokens, mask), block(x, changed, mask), atol=1e-6)
    changed[:, 0] = 100.0  # a real token: must be read
    assert not torch.allclose(block(x, ctx.tokens, mask), block(x, changed, mask), atol=1e-4)


def test_caption_without_tokens_gives_no_nan_and_no_attention():
    block = GatedCrossAttention(8, TEXT_DIM, heads=2)
    _open(block)
    x = torch.randn(2, 5, 8, requires_grad=True)
    ctx = make_context(2)
    mask = ctx.mask.clone()
    mask[1] = False  # row 1: no valid token at all
    out = block(x, ctx.tokens, mask)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in block.parameters())
    # the empty row got only the (image-only) feed-forward: same as with the attention gate shut
    with torch.no_grad():
        block.attn_gate.zero_()
        no_attn = block(x, ctx.tokens, mask)
    assert torch.allclose(out[1], no_attn[1], atol=1e-6)
    assert not torch.allclose(out[0], no_attn[0], atol=1e-4)


def test_film_is_identity_at_init_and_reads_pooled_text_when_open():
    film = FiLM(6, TEXT_DIM)
    x = torch.randn(2, 6, 4, 4)
    a, b = make_context(2, seed=1), make_context(2, seed=2)
    assert torch.equal(film(x, a.pooled), x)
    _open(film)
    assert (film(x, a.pooled) - film(x, b.pooled)).abs().max() > 1e-3
    # per-channel affine: x * (1 + g*gamma) + g*beta with gamma, beta from the pooled text
    gamma, beta = film.to_scale_shift(film.norm(a.pooled)).chunk(2, dim=-1)
    g = torch.tanh(torch.tensor(1.0))
    expected = x * (1 + g * gamma[:, :, None, None]) + g * beta[:, :, None, None]
    assert torch.allclose(film(x, a.pooled), expected, atol=1e-6)
    assert torch.isfinite(film(x, torch.zeros(2, TEXT_DIM))).all()  # empty caption pooled to zeros


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible by attn_heads=3"):
        GatedCrossAttention(8, TEXT_DIM, heads=3)


def test_half_precision_cached_text_is_accepted():
    block, film = GatedCrossAttention(8, TEXT_DIM, heads=2), FiLM(8, TEXT_DIM)
    ctx = make_context(2)
    x = torch.randn(2, 5, 8)
    assert block(x, ctx.tokens.half(), ctx.mask).dtype == torch.float32
    assert film(torch.randn(2, 8, 3, 3), ctx.pooled.half()).dtype == torch.float32
