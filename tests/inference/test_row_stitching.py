"""Prediction through row-streamed windows (``predict.stitch_rows``): the same probabilities and masks as the
full-map path for an ensemble with flip and multi-scale TTA, resized to an original size, with each window run
once and one band of rows held, and predict()'s CSV written from those masks."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor, predict
from mmseg_text.inference.tiling import BAND_ROWS, PackedMasks, StitchedRows, iter_rows, window_starts
from mmseg_text.rle import read_submission, rle_decode

from tests.runs import tiny_config_dict

WINDOW = 64  # the tiny models' training size
RESOLUTION = 128  # inference resolution: 3 x 3 windows of 64 at overlap 0.5
ORIGINAL = (150, 170)  # an original size other than the inference resolution


def _export(tiny_root, base, seed: int):
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.config import load_config
    from mmseg_text.inference.model_dir import export_model
    from mmseg_text.models import build_model, iter_gates
    from mmseg_text.text import build_text_tower
    from mmseg_text.training.data_setup import build_preprocessor

    doc = tiny_config_dict(tiny_root, base / "run", base / "cache")
    doc["model"]["encoder_weights"] = None
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    catalogue = load_catalogue(cfg.data.classes)
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes=len(catalogue), text_dim=build_text_tower(cfg.text).width,
                        image_size=cfg.data.image_size, in_chans=cfg.data.in_chans)
    for gate in iter_gates(model):
        gate.data.fill_(1.0)  # open the text path: every view's caption (side flipped when mirrored) reaches it
    return export_model(base / "exported", model, cfg, catalogue, build_preprocessor(cfg),
                        thresholds=[0.5] * len(catalogue))


@pytest.fixture(scope="module")
def members(tiny_root, tmp_path_factory):
    return [_export(tiny_root, tmp_path_factory.mktemp(f"member{seed}"), seed) for seed in (0, 1)]


def _predictor(members, resolution: int = RESOLUTION, **options) -> Predictor:
    predictor = Predictor(members, PredictOptions(resolution=resolution, device="cpu", **options))
    predictor.windows = replace(predictor.windows, stitch_half=False)
    return predictor  # float32 stitching on the full-map path too: the two paths then agree to rounding


def _pixels(predictor, tiny_root, n: int = 2) -> torch.Tensor:
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))[:n]
    dataset = ImageFiles(files, predictor.preprocess)
    return torch.stack([dataset[i]["pixels"] for i in range(n)])


def _window_inputs(predictor) -> list[int]:
    """Per member, a counter of the window-sized images its network sees (hooks stay for the test)."""
    seen = [0] * len(predictor.members)
    for i, member in enumerate(predictor.members):
        member.exported.model.register_forward_hook(
            lambda _m, inputs, _o, i=i: seen.__setitem__(i, seen[i] + inputs[0].shape[0])
            if tuple(inputs[0].shape[-2:]) == (WINDOW, WINDOW) else None)
    return seen


def test_an_ensemble_with_flip_and_scales_gives_the_full_map_probabilities_and_masks(members, tiny_root):
    predictor = _predictor(members, tta_hflip=True, tta_scales=[1.0, 1.5], weights=[1.0, 3.0])
    assert predictor.stitch_rows and predictor.tiles
    pixels = _pixels(predictor, tiny_root)
    sides, metas = ["left", "right"], [{}, {}]
    full = predictor.probabilities(pixels, sides, metas)  # (2, 29, 128, 128): MONAI, float32 stitching
    expected = F.interpolate(full, size=ORIGINAL, mode="bilinear", align_corners=False)
    # Thresholds at each class's median: about half of every mask is on, so the comparison means something.
    predictor.thresholds = expected.transpose(0, 1).reshape(len(predictor.catalogue), -1).median(dim=1).values.numpy()
    for b in range(2):
        rows = torch.cat([band for _, band in iter_rows(
            predictor.row_source(pixels[b:b + 1], sides[b:b + 1], metas[b:b + 1], ORIGINAL))], dim=1)
        assert rows.shape == (29, *ORIGINAL)
        torch.testing.assert_close(rows, expected[b], atol=1e-5, rtol=0)
    masks = list(predictor.masks(pixels, sides, metas, [ORIGINAL] * 2))
    plain = [predictor.masks_at_original_size(p, ORIGINAL) for p in full]
    cut = torch.as_tensor(predictor.thresholds).view(-1, 1, 1)
    for lean, reference, probs in zip(masks, plain, expected):
        assert isinstance(lean, PackedMasks) and lean.shape == (29, *ORIGINAL)
        lean = np.asarray(lean)
        assert 0.3 < lean.mean() < 0.7
        # Float rounding (~1e-7) may tip a pixel whose probability is within 1e-5 of its threshold, and no other:
        # a flat background puts ~1 % of the pixels there with these median thresholds.
        on_the_threshold = ((probs - cut).abs() < 1e-5).numpy()
        assert not (lean != reference)[~on_the_threshold].any()
        assert (lean != reference).sum() <= 1e-4 * lean.size  # 3 and 6 of 739,500 pixels here


def test_every_window_runs_once_and_one_band_of_rows_is_held(members, tiny_root):
    size = 256  # 7 x 7 windows of 64
    predictor = _predictor(members, resolution=size, tta_hflip=True)
    pixels = _pixels(predictor, tiny_root, n=1)
    seen = _window_inputs(predictor)
    predictor.probabilities(pixels, ["unknown"], [{}])
    per_member = len(window_starts(size, WINDOW, 0.5)) ** 2 * 2  # 49 windows x (plain + mirrored)
    assert seen == [per_member] * 2
    source = predictor.row_source(pixels, ["unknown"], [{}], (size, size))
    assert isinstance(source, StitchedRows) and len(source.views) == 4  # 2 members x 2 views share one band
    for _ in iter_rows(source):
        pass
    assert seen == [2 * per_member] * 2  # no window ran twice
    band_rows = (math.ceil(WINDOW / BAND_ROWS) + 2) * BAND_ROWS  # a window's height + 2 blocks: 128 of 256 rows
    assert source.peak_bytes == (29 + 1) * band_rows * size * 4  # sums and blend counts, float32
    full_map = 29 * size * size * 4  # one (K, R, R) float32 map; the full-map path holds several per image
    assert source.peak_bytes / full_map == pytest.approx(30 / 29 * band_rows / size)


def test_predict_with_windows_writes_the_row_path_masks_and_the_first_pass_uses_them(members, tiny_root, tmp_path):
    meta = str(tiny_root / "meta_data.xlsx")
    images = tiny_root / "test" / "DCM"
    out = tmp_path / "windows.csv"
    options = dict(resolution=RESOLUTION, window_overlap=0.5, with_meta=True, meta_file=meta, device="cpu")
    predict(members, images, out, PredictOptions(**options))
    frame = read_submission(out)
    predictor = Predictor(members, PredictOptions(**options))
    calls = []
    real = predictor.row_source
    predictor.row_source = lambda *a: (calls.append(a[-1]), real(*a))[1]
    files = sorted(images.rglob("*.png"))
    dataset = ImageFiles(files[:1], predictor.preprocess)
    item = dataset[0]
    pixels = item["pixels"][None]
    metas = [predictor.person_facts(files[0])]
    facts = predictor.image_facts(pixels, files[:1], metas)
    assert calls == [(RESOLUTION, RESOLUTION)]  # the first pass (side, wrist angle) went through the row path
    metas = [{**metas[0], "wrist_angle_deg": facts[0]["wrist_angle_deg"], "bent_wrist": facts[0]["bent_wrist"]}]
    (masks,) = predictor.masks(pixels, [facts[0]["side"]], metas, [item["orig_size"]])
    rows = frame[frame["image_name"] == files[0].name]
    decoded = np.stack([rle_decode(r, item["orig_size"]) for r in rows["rle"]])
    np.testing.assert_array_equal(decoded, np.asarray(masks))
    assert len(frame) == 29 * len(files)


def test_without_windows_masks_are_the_batched_full_map_path(members, tiny_root):
    predictor = Predictor(members[:1], PredictOptions(device="cpu"))  # resolution = the training size: no windows
    assert not predictor.tiles
    pixels = _pixels(predictor, tiny_root)
    probs = predictor.probabilities(pixels, ["unknown"] * 2, [{}, {}])
    masks = list(predictor.masks(pixels, ["unknown"] * 2, [{}, {}], [ORIGINAL] * 2))
    for m, p in zip(masks, probs):
        np.testing.assert_array_equal(m, predictor.masks_at_original_size(p, ORIGINAL))
