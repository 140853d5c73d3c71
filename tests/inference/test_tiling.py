"""Sliding-window probabilities (MONAI) and multi-scale TTA: stitching is exact, blending is seamless, and a
fixed-size encoder (Swin) predicts on images larger than the size it was built for. Row-streamed stitching
(``StitchedRows``): MONAI's grid and blend, a band at a time, for plain and mirrored views; a band that does not
grow with the image or the views; bilinear resizing a band at a time; thresholded, packed masks."""
from __future__ import annotations

import math

import pytest
import torch
import numpy as np
import torch.nn.functional as F

from mmseg_text.inference.tiling import (BAND_ROWS, ResizedRows, StitchedRows, TensorRows, View, WindowOptions,
                                         blended_rows, importance_map, iter_rows, masks_from_rows, model_probabilities,
                                         multiscale, window_forward, window_starts)
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


class Local(torch.nn.Module):
    """Two convolutions (5x5, 3x3): windows see their borders, so the blend differs from the full forward."""

    def __init__(self, c: int = 3, k: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(c, k, 5, padding=2), torch.nn.Conv2d(k, k, 3, padding=1))

    def forward(self, x, context=None):
        return self.net(x)


def _all_rows(source, band: int = BAND_ROWS) -> torch.Tensor:
    return torch.cat([rows for _, rows in iter_rows(source, band)], dim=1)


@pytest.mark.parametrize("size,window,overlap", [(160, 64, 0.5), (2048, 512, 0.5), (600, 256, 0.5), (100, 64, 0.25),
                                                 (64, 64, 0.5), (300, 70, 0.75)])
def test_window_grid_and_blend_weights_are_monais(size, window, overlap):
    from monai.data.utils import compute_importance_map, dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    shape, roi = (size, size), (window, window)
    slices = dense_patch_slices(shape, roi, _get_scan_interval(shape, roi, 2, (overlap, overlap)))
    assert sorted({s[0].start for s in slices}) == window_starts(size, window, overlap)
    for mode in ("gaussian", "constant"):
        assert torch.equal(importance_map(window, mode), compute_importance_map(roi, mode=mode, sigma_scale=0.125))


@pytest.mark.parametrize("height,width,overlap,batch", [(200, 232, 0.5, 3), (160, 160, 0.25, 4), (64, 100, 0.5, 1),
                                                        (300, 70, 0.75, 2)])
@pytest.mark.parametrize("band", [7, BAND_ROWS, 100])  # 100: taller than the ring holds, which then grows
def test_row_bands_are_monais_blend_of_plain_and_mirrored_views(height, width, overlap, batch, band):
    model = Local().eval()
    image = torch.randn(1, 3, height, width)
    options = WindowOptions(overlap=overlap, mode="gaussian", batch_size=batch, stitch_half=False)
    with torch.no_grad():
        plain = model_probabilities(model, image, None, window=64, options=options)[0]
        mirrored = model_probabilities(model, image.flip(-1), None, window=64, options=options)[0].flip(-1)
    forward = window_forward(model, None)
    source = StitchedRows([View(forward, image, 0.25), View(forward, image, 0.75, mirrored=True)], 64, options)
    torch.testing.assert_close(_all_rows(source, band), 0.25 * plain + 0.75 * mirrored, atol=1e-6, rtol=0)


def test_a_view_smaller_than_its_window_is_padded_as_monai_pads_it():
    model = Local().eval()
    image = torch.randn(1, 3, 40, 50)
    options = WindowOptions(stitch_half=False)
    with torch.no_grad():
        expected = model_probabilities(model, image, None, window=64, options=options)[0]
    source = blended_rows([(64, [View(window_forward(model, None), image)])], (40, 50), options)
    torch.testing.assert_close(_all_rows(source), expected)


@pytest.mark.parametrize("size", [(123, 41), (17, 90), (50, 70), (50, 151)])
@pytest.mark.parametrize("band", [7, BAND_ROWS])
def test_resizing_a_band_at_a_time_is_the_whole_map_resize(size, band):
    probs = torch.rand(3, 50, 70)
    expected = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(_all_rows(ResizedRows(TensorRows(probs), *size), band), expected, atol=1e-5, rtol=0)


def test_the_row_band_does_not_grow_with_the_image_height_or_the_number_of_views():
    k, width, window = 4, 256, 64
    conv = torch.nn.Conv2d(3, k, 3, padding=1)
    forward = lambda x: conv(x).sigmoid()  # noqa: E731
    band_bytes = (k + 1) * (math.ceil(window / BAND_ROWS) + 2) * BAND_ROWS * width * 4  # sums + counts, float32
    for height in (256, 1024):
        for n_views in (1, 4):
            image = torch.randn(1, 3, height, width)
            views = [View(forward, image, 1 / n_views, mirrored=bool(i % 2)) for i in range(n_views)]
            source = StitchedRows(views, window, WindowOptions())
            for _ in iter_rows(source):
                pass
            assert source.peak_bytes == band_bytes  # 128 rows, whatever the height and the views
    assert band_bytes / (k * 1024 * width * 4) == pytest.approx(5 / 4 * 128 / 1024)  # vs one (K, H, W) map


def test_packed_masks_are_the_thresholded_rows():
    probs = torch.rand(3, 45, 37)  # a width that is not a multiple of 8
    thresholds = [0.2, 0.5, 0.9]
    expected = (probs > torch.tensor(thresholds).view(-1, 1, 1)).numpy()
    np.testing.assert_array_equal(masks_from_rows(TensorRows(probs), thresholds, band=10), expected)
    packed = masks_from_rows(TensorRows(probs), thresholds, band=10, packed=True)
    assert packed.shape == (3, 45, 37) and len(packed) == 3 and packed.bits.nbytes == 3 * 45 * 5
    np.testing.assert_array_equal(np.asarray(packed), expected)
    for k, mask in enumerate(packed):
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, expected[k])
        np.testing.assert_array_equal(packed[k], expected[k])
