"""Coordinate channels (``model.coord_channels``): a training crop and a prediction window over the same pixels
carry the same coordinates (also mirrored), windows of a coordinate-reading model reproduce its full forward,
and the widened stem starts as the model without coordinates."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from mmseg_text.data.preprocess import Preprocessor, coordinates, mirror_images
from mmseg_text.inference.tiling import StitchedRows, View, WindowOptions, iter_rows, model_probabilities, window_forward

from tests.runs import tiny_config_dict

CROP, CACHE = 64, 128  # the tiny model sees 64 px crops of a 128 px working image: 3 x 3 windows at overlap 0.5


def _origin(window: torch.Tensor, whole: int) -> tuple[int, int]:
    """(top, left) of a (C, h, w) input whose last two channels are coordinates in a ``whole``-px image."""
    y, x = window[-2, 0, 0].item(), window[-1, 0, 0].item()
    return round((y + 1) * whole / 2 - 0.5), round((x + 1) * whole / 2 - 0.5)


def test_coordinates_are_pixel_centres_and_a_mirror_keeps_them_canonical():
    pre = Preprocessor(image_size=6, mean=(0.5,), std=(0.25,), coord_channels=True)
    image = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    tensor = pre.to_tensor(image)
    assert tensor.shape == (3, 6, 6) and pre.input_channels == 3
    np.testing.assert_allclose(tensor[2, 0].numpy(), [-5 / 6, -3 / 6, -1 / 6, 1 / 6, 3 / 6, 5 / 6], atol=1e-6)
    np.testing.assert_allclose(tensor[1, :, 0].numpy(), tensor[2, 0].numpy(), atol=0)  # y runs down as x runs right
    # The mirrored input is the input of the mirrored image: pixels flipped, coordinates those of its own grid.
    torch.testing.assert_close(mirror_images(tensor[None], True)[0], pre.to_tensor(image[:, ::-1].copy()),
                               atol=1e-6, rtol=0)
    assert not torch.equal(tensor.flip(-1), pre.to_tensor(image[:, ::-1].copy()))  # a plain flip would not be
    window = pre.to_tensor(image[2:5, 1:4], origin=(2, 1), whole=(6, 6))
    torch.testing.assert_close(window, tensor[:, 2:5, 1:4])
    assert coordinates((2, 2), (0, 0), (4, 4)).dtype == np.float32


class Pointwise(torch.nn.Module):
    """Per-pixel logits from the pixel and its coordinates: a window's output is the full output's slice only when
    its coordinate channels are the whole image's."""

    def __init__(self, channels: int = 5, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Conv2d(channels, classes, 1)
        self.net.weight.data[:, -2:] *= 10  # the coordinates dominate

    def forward(self, x, context=None):
        return self.net(x)


def test_windows_of_a_coordinate_model_on_a_2x_image_are_its_full_forward_also_mirrored():
    pre = Preprocessor(image_size=128, mean=(0.5,) * 3, std=(0.25,) * 3, coord_channels=True)
    image = pre.to_tensor(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8))[None]
    model = Pointwise().eval()
    options = WindowOptions(stitch_half=False)
    with torch.no_grad():
        full = model(image).sigmoid()[0]
        full_mirrored = model(mirror_images(image, True)).sigmoid()[0].flip(-1)
        windows = model_probabilities(model, image, None, window=64, options=options)[0]
    torch.testing.assert_close(windows, full, atol=1e-4, rtol=0)
    forward = window_forward(model, None)
    for mirrored, expected in ((False, full), (True, full_mirrored)):
        source = StitchedRows([View(forward, image, mirrored=mirrored, coord_channels=True)], 64, options)
        rows = torch.cat([band for _, band in iter_rows(source)], dim=1)
        torch.testing.assert_close(rows, expected, atol=1e-4, rtol=0)
    # Without coord_channels=True a mirrored view would feed the windows flipped x coordinates: not the same.
    wrong = StitchedRows([View(forward, image, mirrored=True)], 64, options)
    assert (torch.cat([b for _, b in iter_rows(wrong)], dim=1) - full_mirrored).abs().max() > 0.05


def test_the_widened_stem_starts_as_the_model_without_coordinates():
    from mmseg_text.config import ModelConfig
    from mmseg_text.models import build_model

    outputs = []
    image = torch.randn(2, 3, 64, 64)
    for coords in (False, True):
        torch.manual_seed(3)
        cfg = ModelConfig(encoder="tf_efficientnet_lite0", conditioning="none", coord_channels=coords,
                          decoder_channels=[32, 16, 16, 8, 8])
        model = build_model(cfg, num_classes=4, image_size=64).eval()
        x = image if not coords else torch.cat([image, 5 * torch.randn(2, 2, 64, 64)], dim=1)
        with torch.no_grad():
            outputs.append(model(x, None))
        if coords:
            assert model.encoder.input_channels == 5
            stem = model.encoder.model.conv_stem
            assert stem.in_channels == 5 and torch.count_nonzero(stem.weight[:, 3:]) == 0
            with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
                model(image, None)
    torch.testing.assert_close(outputs[0], outputs[1])  # zero filters: the coordinates change nothing at init


@pytest.fixture(scope="module")
def coord_run(tiny_root, tmp_path_factory):
    """A tiny coordinate model trained for 2 steps on 64 px crops (flipped every time) of a 128 px cache."""
    from mmseg_text.config import load_config
    from mmseg_text.training.loop import train

    base = tmp_path_factory.mktemp("coords")
    doc = tiny_config_dict(tiny_root, base / "run", base / "cache")
    doc["data"].update({"cache_size": CACHE, "crop_size": CROP, "augment": [{"name": "HorizontalFlip", "p": 1.0}]})
    doc["model"]["coord_channels"] = True
    doc["train"].update({"max_steps": 2, "eval_every": 2, "checkpoint_every": 0})
    path = base / "coords.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    train(cfg)
    return cfg, base / "run" / "best"


def test_a_training_crop_carries_its_window_of_the_whole_image_coordinates_mirrored_with_the_crop(coord_run):
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.training.data_setup import build_run_data

    cfg, _ = coord_run
    data = build_run_data(cfg, load_catalogue(cfg.data.classes), progress=False)
    assert data.preprocess.coord_channels and data.preprocess.input_channels == 5
    seen = set()
    for index in range(4):
        sample = data.train[index]["image"]  # flipped (HorizontalFlip p=1)
        assert sample.shape == (5, CROP, CROP)
        whole = mirror_images(data.preprocess.to_tensor(data.train.load_arrays(index)[0])[None], True)[0]
        top, left = _origin(sample, CACHE)
        seen.add((top, left))
        # Same pixels, same coordinates: the crop is the window at (top, left) of the flipped whole image.
        torch.testing.assert_close(sample, whole[:, top:top + CROP, left:left + CROP], atol=1e-6, rtol=0)
    assert len(seen) > 1  # the crops sit in different places
    val = data.val[0]["image"]  # validation: the whole image and its whole grid
    assert val.shape == (5, CACHE, CACHE) and _origin(val, CACHE) == (0, 0)


def test_every_prediction_window_reads_the_coordinates_of_its_pixels_in_both_tta_views(coord_run, tiny_root):
    from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor

    _, best = coord_run
    predictor = Predictor([best], PredictOptions(device="cpu", tta_hflip=True))
    assert predictor.preprocess.image_size == CACHE and predictor.members[0].window == CROP and predictor.tiles
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))[:1]
    pixels = ImageFiles(files, predictor.preprocess)[0]["pixels"][None]
    member = predictor.members[0]
    whole = predictor.inputs(pixels, member)[0]
    views = {False: whole, True: mirror_images(whole[None], True)[0]}
    windows = []
    member.exported.model.register_forward_pre_hook(lambda _m, args: windows.extend(args[0]))
    masks = list(predictor.masks(pixels, ["left"], [{}], [tuple(pixels.shape[-2:])]))
    assert len(masks) == 1 and len(windows) == 2 * 9  # 3 x 3 windows, plain and mirrored
    matched = {False: set(), True: set()}
    for window in windows:
        top, left = _origin(window, CACHE)
        for mirrored, image in views.items():
            if torch.allclose(window, image[:, top:top + CROP, left:left + CROP], atol=1e-6):
                matched[mirrored].add((top, left))
    assert matched[False] == matched[True] == {(y, x) for y in (0, 32, 64) for x in (0, 32, 64)}
