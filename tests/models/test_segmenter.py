"""The assembled model: shapes for every backbone x conditioning x head, and what text can change."""
import pytest
import torch

from mmseg_text.models import (FiLM, GatedCrossAttention, TextConditionedSegmenter, TextQueryHead, build_model,
                               iter_gates)

from .conftest import BACKBONES, NUM_CLASSES, TEXT_DIM, TINY_SWIN, images, make_context, tiny_cfg

CONDITIONINGS = ["none", "cross_attn", "film"]
HEADS = ["conv", "text_query"]


def _build(backbone="resnet18", conditioning="cross_attn", head="conv", **overrides) -> TextConditionedSegmenter:
    name, kwargs, size = BACKBONES[backbone]
    cfg = tiny_cfg(name, conditioning=conditioning, head=head, encoder_kwargs=dict(kwargs), **overrides)
    return build_model(cfg, num_classes=NUM_CLASSES, text_dim=TEXT_DIM, image_size=size).eval()


def _size(backbone):
    return BACKBONES[backbone][2]


def _open_gates(model, value=1.0):
    with torch.no_grad():
        for gate in iter_gates(model):
            gate.fill_(value)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_logits_shape_and_finite(backbone, conditioning, head):
    model = _build(backbone, conditioning, head)
    size = _size(backbone)
    with torch.no_grad():
        logits = model(images(2, size), make_context(2))
    assert logits.shape == (2, NUM_CLASSES, size, size)
    assert torch.isfinite(logits).all()
    assert model.has_text_modules == (conditioning != "none" or head == "text_query")


@pytest.mark.parametrize("conditioning", ["cross_attn", "film"])
@pytest.mark.parametrize("backbone", ["resnet18", "swin-64", "effnet-lite0-64"])
def test_text_on_equals_text_off_at_init(backbone, conditioning):
    model = _build(backbone, conditioning)
    x = images(2, _size(backbone))
    with torch.no_grad():
        with_a = model(x, make_context(2, seed=1))
        with_b = model(x, make_context(2, seed=2))
        # the same weights without any text module
        plain = _build(backbone, "none")
        result = plain.load_state_dict(model.state_dict(), strict=False)
        assert not result.missing_keys and all(k.startswith("decoder.conditioners.") for k in result.unexpected_keys)
        without = plain(x)
    assert (with_a - with_b).abs().max() <= 1e-6
    assert (with_a - without).abs().max() <= 1e-6


@pytest.mark.parametrize("conditioning", ["cross_attn", "film"])
@pytest.mark.parametrize("backbone", ["resnet18", "swin-64", "convnext_atto"])
def test_open_gates_make_the_caption_matter(backbone, conditioning):
    model = _build(backbone, conditioning)
    _open_gates(model)
    x = images(2, _size(backbone))
    a, b = make_context(2, seed=1), make_context(2, seed=2)
    with torch.no_grad():
        diff = (model(x, a) - model(x, b)).abs()
    assert diff.amax(dim=(1, 2, 3)).min() > 1e-4  # every image's logits moved


def test_cross_attention_reads_tokens_and_film_reads_pooled():
    xattn, film = _build("resnet18", "cross_attn"), _build("resnet18", "film")
    _open_gates(xattn), _open_gates(film)
    x = images(2)
    a = make_context(2, seed=1)
    tokens_changed = type(a)(make_context(2, seed=2).tokens, a.mask, a.pooled, a.class_embeddings)
    pooled_changed = type(a)(a.tokens, a.mask, make_context(2, seed=2).pooled, a.class_embeddings)
    with torch.no_grad():
        assert (xattn(x, a) - xattn(x, tokens_changed)).abs().max() > 1e-4
        assert torch.equal(xattn(x, a), xattn(x, pooled_changed))
        assert (film(x, a) - film(x, pooled_changed)).abs().max() > 1e-4
        assert torch.equal(film(x, a), film(x, tokens_changed))


@pytest.mark.parametrize("backbone", ["resnet18", "swin-64"])
def test_conditioning_off_has_no_text_module_and_ignores_captions(backbone):
    model = _build(backbone, "none")
    assert not model.has_text_modules and iter_gates(model) == []
    assert not any(isinstance(m, (GatedCrossAttention, FiLM, TextQueryHead)) for m in model.modules())
    names = [n for n, _ in model.decoder.named_parameters()] + [n for n, _ in model.head.named_parameters()]
    assert not [n for n in names if any(w in n for w in ("attn", "film", "text", "gate", "condition"))]
    _open_gates(model)  # nothing to open
    x = images(2, _size(backbone))
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model(x, make_context(2, seed=1)), plain)
        assert torch.equal(model(x, make_context(2, seed=2)), plain)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_text_query_logits_follow_the_class_embeddings(conditioning):
    model = _build("resnet18", conditioning, "text_query")
    x, ctx = images(2), make_context(2, seed=1)
    other_names = type(ctx)(ctx.tokens, ctx.mask, ctx.pooled, make_context(2, seed=5).class_embeddings)
    perm = torch.randperm(NUM_CLASSES)
    permuted = type(ctx)(ctx.tokens, ctx.mask, ctx.pooled, ctx.class_embeddings[perm])
    with torch.no_grad():
        logits = model(x, ctx)
        assert (logits - model(x, other_names)).abs().max() > 1e-4
        # channel k is "the bone called names[k]": permuting the names permutes the outputs (bias is 0 at init)
        assert torch.allclose(model(x, permuted), logits[:, perm], atol=1e-5)


def test_one_context_for_the_whole_batch():
    model = _build("resnet18", "cross_attn", "text_query")
    _open_gates(model)
    x = images(3)
    one = make_context(1, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(x, one), model(x, one.expand(3)))


def test_missing_context_is_a_clear_error():
    with pytest.raises(ValueError, match="conditioning='cross_attn' needs a TextContext"):
        _build("resnet18", "cross_attn")(images(1))
    with pytest.raises(ValueError, match="head=text_query needs a TextContext"):
        _build("resnet18", "none", "text_query")(images(1))
    ctx = make_context(1)
    no_names = type(ctx)(ctx.tokens, ctx.mask, ctx.pooled, None)
    with pytest.raises(ValueError, match="needs context.class_embeddings"):
        _build("resnet18", "none", "text_query")(images(1), no_names)
    with pytest.raises(ValueError, match="built for 29 classes, got 5"):
        _build("resnet18", "none", "text_query")(images(1), make_context(1, classes=5))


def test_wrong_text_width_and_wrong_channels_are_errors():
    model = _build("resnet18", "film")
    with pytest.raises(ValueError, match="width 8, the model was built for text_dim=16"):
        model(images(1), make_context(1, text_dim=8))
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
        model(images(1, in_chans=1), make_context(1))


@pytest.mark.parametrize("size", [72, 80])
def test_sizes_not_divisible_by_32_come_back_at_input_size(size):
    model = build_model(tiny_cfg("resnet18"), num_classes=3, text_dim=TEXT_DIM).eval()
    with torch.no_grad():
        assert model(images(1, size), make_context(1, classes=3)).shape == (1, 3, size, size)


def test_gradients_reach_the_gates_at_init():
    model = _build("resnet18", "cross_attn").train()
    model(images(2), make_context(2)).square().mean().backward()
    grads = [g.grad for g in iter_gates(model)]
    assert len(grads) == 6 and all(g is not None and g.abs() > 0 for g in grads)


def test_swin_model_in_one_channel():
    cfg = tiny_cfg("swin_tiny_patch4_window7_224", conditioning="film", encoder_kwargs=dict(TINY_SWIN))
    model = build_model(cfg, num_classes=NUM_CLASSES, text_dim=TEXT_DIM, image_size=64, in_chans=1).eval()
    with torch.no_grad():
        assert model(images(1, 64, in_chans=1), make_context(1)).shape == (1, NUM_CLASSES, 64, 64)
