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
    assert json.loads((faded / CARD_FILE).read_text()) == {"ids": 3, "size": 64, "seed": 0, "degrade": 1.0}


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
