"""Sliding-window probabilities (MONAI) and multi-scale TTA: stitching is exact, blending is seamless, and a
fixed-size encoder (Swin) predicts on images larger than the size it was built for."""
from __future__ import annotations

import pytest
import torch

from mmseg_text.inference.tiling import WindowOptions, model_probabilities, multiscale
from mmseg_text.models import TextContext, build_model


class Pointwise(torch.nn.Module):
    """A 1x1 convolution: no spatial context, so any tiling must reproduce the full forward exactly."""

    def __init__(self, c: int = 3, k: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(c, k, 1)

    def forward(self, x, context=None):
        return self.conv(x)


class Constant(torch.nn.Module):
    def forward(self, x, context=None):
        return torch.full((x.shape[0], 2, *x.shape[-2:]), 0.3)


@pytest.mark.parametrize("mode,overlap", [("constant", 0.0), ("constant", 0.5), ("gaussian", 0.5), ("gaussian", 0.25)])
def test_windows_of_a_pointwise_model_reproduce_the_full_forward(mode, overlap):
    model = Pointwise().eval()
    images = torch.randn(2, 3, 160, 160)
    full = model(images).sigmoid()
    exact = WindowOptions(overlap=overlap, mode=mode, stitch_half=False)
    torch.testing.assert_close(model_probabilities(model, images, None, window=64, options=exact), full, atol=1e-5, rtol=1e-5)
    half = model_probabilities(model, images, None, window=64, options=WindowOptions(overlap=overlap, mode=mode))
    assert half.dtype == torch.float32 and (half - full).abs().max() < 2e-3  # float16 windows and blending: half the memory


def test_gaussian_blending_of_a_constant_model_is_seamless():
    out = model_probabilities(Constant(), torch.zeros(1, 3, 200, 200), None, window=64,
                              options=WindowOptions(overlap=0.5, mode="gaussian", stitch_half=False))
    expected = torch.sigmoid(torch.tensor(0.3))
    assert out.shape == (1, 2, 200, 200)
    torch.testing.assert_close(out, torch.full_like(out, expected.item()), atol=1e-6, rtol=0)


def test_window_equal_to_the_image_is_the_plain_forward():
    model = build_model({"encoder": "resnet18", "decoder_channels": [16, 16, 8, 8, 8], "conditioning": "none"},
                        num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(images).sigmoid()
        one_window = model_probabilities(model, images, None, window=64)
    torch.testing.assert_close(one_window, plain, atol=1e-5, rtol=1e-5)


def test_swin_built_for_its_window_predicts_larger_images_and_every_window_reads_its_image_caption():
    model = build_model({"encoder": "swin_tiny_patch4_window7_224", "decoder_channels": [16, 16, 8, 8, 8],
                         "conditioning": "cross_attn", "condition_stages": [0], "attn_heads": 2,
                         "encoder_kwargs": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                                            "window_size": 2}},
                        num_classes=3, text_dim=8, image_size=64).eval()
    for gate in __import__("mmseg_text.models", fromlist=["iter_gates"]).iter_gates(model):
        gate.data.fill_(1.0)  # open the text path so that captions change the output
    torch.manual_seed(0)
    context = TextContext(tokens=torch.randn(2, 5, 8), mask=torch.ones(2, 5, dtype=torch.bool), pooled=torch.randn(2, 8))
    images = torch.randn(1, 3, 128, 128).expand(2, -1, -1, -1).contiguous()  # the same image, two captions
    with torch.no_grad():
        out = model_probabilities(model, images, context, window=64, options=WindowOptions(overlap=0.5, stitch_half=False))
        second = TextContext(context.tokens[1:], context.mask[1:], context.pooled[1:])
        alone = model_probabilities(model, images[1:], second, window=64, options=WindowOptions(overlap=0.5, stitch_half=False))
    assert out.shape == (2, 3, 128, 128) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], alone)  # image 1's windows read image 1's caption, in a batch or alone
    assert (torch.logit(out[0].double()) - torch.logit(out[1].double())).abs().max() > 1e-5  # captions differ


def test_multiscale_of_a_pointwise_model_is_close_to_one_scale():
    model = Pointwise().eval()
    images = torch.randn(1, 3, 64, 64)
    probs = lambda x: model(x).sigmoid()  # noqa: E731
    assert multiscale(probs, images, [1.0]).shape == (1, 4, 64, 64)
    torch.testing.assert_close(multiscale(probs, images, [1.0]), probs(images))
    two = multiscale(probs, images, [1.0, 2.0])  # upsampled then downsampled back: a smoothed copy
    assert two.shape == (1, 4, 64, 64) and (two - probs(images)).abs().mean() < 0.05
