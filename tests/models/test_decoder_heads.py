"""Decoder wiring (skips, strides, stages) and the heads' arithmetic."""
import math

import pytest
import torch

from mmseg_text.models import ConvHead, TextQueryHead, UNetDecoder

from .conftest import TEXT_DIM, make_context


def _features(channels, reductions, size=64, batch=1):
    return [torch.randn(batch, c, size // r, size // r) for c, r in zip(channels, reductions)]


@pytest.mark.parametrize("reductions", [[2, 4, 8, 16, 32], [4, 8, 16, 32]])
def test_unet_upsamples_to_input_size_from_stride_2_or_4(reductions):
    channels = [8, 12, 16, 20, 24][-len(reductions):]
    decoder = UNetDecoder(channels, [16, 16, 8, 8, 4], encoder_reductions=reductions)
    assert decoder.out_channels == 4
    assert decoder.block_reductions == [16, 8, 4, 2, 1]
    # a stride-4 backbone has no skip for the stride-2 and stride-1 blocks
    skip_channels = [b.conv1[0].in_channels for b in decoder.blocks]
    expected_skip = [c for c, r in zip(channels, reductions) if r < 32][::-1] + [0] * (5 - (len(reductions) - 1))
    assert skip_channels == [i + s for i, s in zip([24, 16, 16, 8, 8], expected_skip)]
    out = decoder(_features(channels, reductions), output_size=(64, 64))
    assert out.shape == (1, 4, 64, 64)


def test_decoder_validates_its_options():
    channels, reductions = [8, 16, 32, 64], [4, 8, 16, 32]
    with pytest.raises(ValueError, match="needs 5 entries"):
        UNetDecoder(channels, [16, 8, 8], encoder_reductions=reductions)
    allowed = r"must be one of \['none', 'cross_attn', 'film'\], got 'xattn'"
    with pytest.raises(ValueError, match=r"'model.conditioning' " + allowed):
        UNetDecoder(channels, [8] * 5, encoder_reductions=reductions, conditioning="xattn", text_dim=4)
    with pytest.raises(ValueError, match=r"condition_stages \[7\] out of range"):
        UNetDecoder(channels, [8] * 5, encoder_reductions=reductions, conditioning="film", condition_stages=[0, 7],
                    text_dim=4)
    with pytest.raises(ValueError, match="text_dim"):
        UNetDecoder(channels, [8] * 5, encoder_reductions=reductions, conditioning="film", condition_stages=[0])
    with pytest.raises(ValueError, match="empty model.condition_stages"):
        UNetDecoder(channels, [8] * 5, encoder_reductions=reductions, conditioning="film", condition_stages=[],
                    text_dim=4)
    with pytest.raises(ValueError, match="power-of-2"):
        UNetDecoder(channels, [8] * 5, encoder_reductions=[4, 8, 8, 32])


def test_condition_stages_count_from_the_deepest():
    decoder = UNetDecoder([8, 16, 32, 64], [32, 16, 8, 8, 8], encoder_reductions=[4, 8, 16, 32],
                          conditioning="cross_attn", condition_stages=[0, 2], text_dim=TEXT_DIM, attn_heads=2)
    assert sorted(decoder.conditioners) == ["0", "2"]
    assert decoder.conditioners["0"].attn.to_q.in_features == 32  # deepest block's width
    assert decoder.conditioners["2"].attn.to_q.in_features == 8
    with pytest.raises(ValueError, match="needs a TextContext"):
        decoder(_features([8, 16, 32, 64], [4, 8, 16, 32]))


def test_text_query_head_arithmetic():
    head = TextQueryHead(6, TEXT_DIM, 4, num_classes=3)
    with torch.no_grad():
        head.logit_scale.fill_(2.0)
        head.class_bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    x = torch.randn(2, 6, 5, 5)
    ctx = make_context(2, classes=3)
    pixels = head.pixel_proj(x)  # (B,E,H,W)
    queries = head.class_proj(ctx.class_embeddings)  # (K,E)
    expected = torch.einsum("behw,ke->bkhw", pixels, queries) / math.sqrt(4) * 2.0
    expected = expected + torch.tensor([0.5, -1.0, 0.0])[None, :, None, None]
    assert torch.allclose(head(x, ctx), expected, atol=1e-5)


def test_conv_head():
    head = ConvHead(6, 29)
    assert head(torch.randn(2, 6, 4, 4)).shape == (2, 29, 4, 4) and not head.needs_text


def test_group_norm_decoder_is_per_sample():
    channels, reductions = [8, 16, 32, 64], [4, 8, 16, 32]
    decoder = UNetDecoder(channels, [32, 16, 16, 8, 4], encoder_reductions=reductions, norm="group").train()
    norms = [m for m in decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 10 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in decoder.modules())
    assert [n.num_groups for n in norms[:2]] == [8, 8] and norms[-1].num_groups == 1  # >= 4 channels per group
    features = _features(channels, reductions, batch=2)
    together = decoder(features, output_size=(64, 64))
    alone = decoder([f[:1] for f in features], output_size=(64, 64))
    assert torch.allclose(together[:1], alone, atol=1e-5)  # training-mode output independent of the batch
    with pytest.raises(ValueError, match=r"'model.norm' must be one of \['batch', 'group'\], got 'layer'"):
        UNetDecoder(channels, [8] * 5, encoder_reductions=reductions, norm="layer")
