"""Paired initialisation: for one seed, text-off and text-on models start from the same shared weights."""
import torch

from mmseg_text.models import build_model

from .conftest import TEXT_DIM, tiny_cfg


def _state(seed, conditioning, *, head="conv", draws_before=0):
    torch.manual_seed(seed)
    torch.rand(draws_before)  # e.g. a text tower drawing from the global stream before the model is built
    text_dim = None if conditioning == "none" and head == "conv" else TEXT_DIM
    model = build_model(tiny_cfg(conditioning=conditioning, head=head), num_classes=3, text_dim=text_dim)
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def _shared(a, b):
    names = sorted(set(a) & set(b))
    assert any(n.startswith("encoder.") for n in names) and any(n.startswith("decoder.blocks.") for n in names)
    return names


def test_text_modules_do_not_shift_the_shared_initialisation():
    plain = _state(3, "none")
    assert "head.conv.weight" in plain
    for conditioning in ("cross_attn", "film"):
        text_on = _state(3, conditioning)
        assert any(k.startswith("decoder.conditioners.") for k in text_on)
        names = _shared(plain, text_on)
        assert "head.conv.weight" in names
        for name in names:
            assert torch.equal(plain[name], text_on[name]), f"{conditioning}: {name}"


def test_a_text_query_head_leaves_the_encoder_and_decoder_as_they_were():
    plain, text_head = _state(3, "none"), _state(3, "cross_attn", head="text_query")
    for name in _shared(plain, text_head):
        assert torch.equal(plain[name], text_head[name]), name


def test_the_seed_decides_and_earlier_draws_do_not():
    a, b = _state(3, "none"), _state(4, "none")
    differing = [n for n in a if not torch.equal(a[n], b[n])]
    for prefix in ("encoder.", "decoder.blocks.", "head.conv.weight"):
        assert any(n.startswith(prefix) for n in differing), prefix
    shifted = _state(3, "cross_attn", draws_before=1000)
    for name in _shared(a, shifted):
        assert torch.equal(a[name], shifted[name]), name


def test_building_leaves_the_global_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    build_model(tiny_cfg(conditioning="film"), num_classes=3, text_dim=TEXT_DIM)
    assert torch.equal(torch.rand(4), expected)
    assert torch.initial_seed() == 5
