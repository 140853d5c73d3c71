"""mmseg-make-synthetic --degrade L: the images say less about the bones, the truth (masks, metadata) is unchanged."""
import json

import numpy as np
import pandas as pd
import pytest

from mmseg_text.cli.make_synthetic import main as make_synthetic
from mmseg_text.data.synthetic import CARD_FILE, bone_cnr, generate_dataset, plan_dataset, render_image

PLAN = plan_dataset(3, 0)
SPEC = PLAN.images[0]


def mean_cnr(size: int, level: float) -> float:
    return float(np.mean([bone_cnr(render_image(spec, size, level)) for spec in PLAN.images[:2]]))


def test_level_0_is_the_plain_image_bit_for_bit_and_the_polygons_never_change():
    plain, zero, faded = render_image(SPEC, 128), render_image(SPEC, 128, 0.0), render_image(SPEC, 128, 1.0)
    assert plain.image.tobytes() == zero.image.tobytes()
    assert not np.array_equal(plain.image, faded.image)
    assert plain.polygons.keys() == faded.polygons.keys()
    assert all(np.array_equal(plain.polygons[k], faded.polygons[k]) for k in plain.polygons)
    assert np.array_equal(render_image(SPEC, 128, 0.5).image, render_image(SPEC, 128, 0.5).image)  # deterministic


def test_the_bones_fade_into_the_noise_but_the_hand_stays():
    cnr = [mean_cnr(256, level) for level in (0.0, 0.5, 1.0)]
    assert cnr[0] > cnr[1] > cnr[2]
    assert cnr[2] < cnr[0] / 10  # at level 1 the bones are nearly gone (512 px, 6 images: 28.7 -> 8.2 -> 0.6)
    faded = render_image(SPEC, 256, 1.0).image.astype(np.float32)
    hand, background = faded[faded >= np.percentile(faded, 80)], faded[faded <= np.percentile(faded, 20)]
    assert hand.mean() - background.mean() > 40  # the silhouette is still plain to see (of 255)


def silhouette_contrast(rendered) -> float:
    """Mean intensity near the bones minus far from them (of 255): how plainly the hand shows."""
    import cv2

    from mmseg_text.data.synthetic.contrast import bone_masks

    image, (bone, _) = rendered.image.astype(np.float32), bone_masks(rendered)
    near = cv2.dilate(bone.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    far = ~(cv2.dilate(bone.astype(np.uint8), np.ones((61, 61), np.uint8)) > 0)
    return float(image[near].mean() - image[far].mean())


def test_the_hand_fade_hides_the_silhouette_and_the_side_letter_too():
    size = 256
    plain = render_image(SPEC, size)
    assert render_image(SPEC, size, 0.0, "hand").image.tobytes() == plain.image.tobytes()  # level 0: same bytes
    bones_only, half, gone = (render_image(SPEC, size, 1.0), render_image(SPEC, size, 0.5, "hand"),
                              render_image(SPEC, size, 1.0, "hand"))
    contrast = [silhouette_contrast(r) for r in (plain, half, gone)]
    assert contrast[0] > contrast[1] > 10 and abs(contrast[2]) < 1.5  # 512 px: 67 / 38 / 0.0 (bones fade: 29)
    assert silhouette_contrast(bones_only) > 15
    assert abs(bone_cnr(gone)) < 0.3
    # at level 1 nothing in the image depends on the hand: two people's images differ only by noise and exposure
    other = render_image(PLAN.images[3], size, 1.0, "hand").image.astype(np.float32)
    assert abs(float(np.corrcoef(gone.image.ravel(), other.ravel())[0, 1])) < 0.3
    assert gone.image.max() < 255 * 0.6  # no bright lead letter left (plain: letters near white)
    assert all(np.array_equal(plain.polygons[k], gone.polygons[k]) for k in plain.polygons)


def test_an_unknown_fade_is_an_error_naming_the_option(tmp_path):
    with pytest.raises(ValueError, match=r"fade \(--fade\) must be one of \['bones', 'hand'\]"):
        render_image(SPEC, 64, 0.5, "skin")
    with pytest.raises(ValueError, match="--fade"):
        generate_dataset(tmp_path / "g", ids=2, size=64, degrade=0.5, fade="skin", progress=False)
    assert not (tmp_path / "g").exists()


def test_skip_existing_refuses_another_fade_but_not_at_level_0(tmp_path):
    generate_dataset(tmp_path / "d", ids=2, size=64, degrade=0.5, progress=False)
    with pytest.raises(ValueError, match="fade bones vs hand"):
        generate_dataset(tmp_path / "d", ids=2, size=64, degrade=0.5, fade="hand", skip_existing=True, progress=False)
    generate_dataset(tmp_path / "p", ids=2, size=64, progress=False)
    again = generate_dataset(tmp_path / "p", ids=2, size=64, fade="hand", skip_existing=True, progress=False)
    assert again["written"] == 0


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_level_outside_0_1_is_an_error_naming_degrade(bad, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"degrade \(--degrade\) must be in \[0, 1\]"):
        render_image(SPEC, 128, bad)
    with pytest.raises(ValueError, match="--degrade"):
        generate_dataset(tmp_path / "g", ids=2, size=64, degrade=bad, progress=False)
    assert make_synthetic(["--out", str(tmp_path / "d"), "--ids", "2", "--size", "64", "--degrade", str(bad)]) == 1
    assert "--degrade" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "g").exists()


def test_the_cli_writes_the_same_annotations_and_metadata_and_records_the_level(tmp_path):
    assert make_synthetic(["--out", str(tmp_path / "plain"), "--ids", "3", "--size", "64", "--no-progress"]) == 0
    assert make_synthetic(["--out", str(tmp_path / "faded"), "--ids", "3", "--size", "64", "--degrade", "1",
                           "--no-progress"]) == 0
    plain, faded = tmp_path / "plain", tmp_path / "faded"
    jsons = sorted(p.relative_to(plain) for p in plain.rglob("*.json") if "outputs_json" in p.parts)
    pngs = sorted(p.relative_to(plain) for p in plain.rglob("*.png"))
    assert jsons and len(pngs) == len(jsons)
    assert all(json.loads((plain / p).read_text())["annotations"] == json.loads((faded / p).read_text())["annotations"]
               for p in jsons)
    assert all((plain / p).read_bytes() != (faded / p).read_bytes() for p in pngs)
    assert (plain / "synthetic_truth.csv").read_bytes() == (faded / "synthetic_truth.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_excel(plain / "meta_data.xlsx"), pd.read_excel(faded / "meta_data.xlsx"))
    assert json.loads((plain / CARD_FILE).read_text())["degrade"] == 0.0
    assert json.loads((faded / CARD_FILE).read_text()) == {"ids": 3, "size": 64, "seed": 0, "degrade": 1.0,
                                                           "fade": "bones"}


def test_the_summary_records_the_level_and_skip_existing_refuses_another(tmp_path):
    summary = generate_dataset(tmp_path / "d", ids=2, size=64, degrade=0.25, progress=False)
    assert summary["degrade"] == 0.25
    again = generate_dataset(tmp_path / "d", ids=2, size=64, degrade=0.25, skip_existing=True, progress=False)
    assert again["written"] == 0 and again["skipped"] == summary["written"]
    with pytest.raises(ValueError, match="degrade 0.25 vs 0.5"):  # kept images were drawn at another level
        generate_dataset(tmp_path / "d", ids=2, size=64, degrade=0.5, skip_existing=True, progress=False)
    (tmp_path / "d" / CARD_FILE).unlink()  # a folder from before the card: its images are level 0
    with pytest.raises(ValueError, match="degrade 0.0 vs 0.5"):
        generate_dataset(tmp_path / "d", ids=2, size=64, degrade=0.5, skip_existing=True, progress=False)
    fresh = generate_dataset(tmp_path / "new", ids=2, size=64, degrade=0.5, skip_existing=True, progress=False)
    assert fresh["skipped"] == 0
