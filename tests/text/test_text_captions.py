import math
import pickle

import numpy as np
import pandas as pd
import pytest

from mmseg_text.text import CaptionBuilder, CaptionTemplateError, load_templates

TEMPLATES = "caption_templates"
FULL = dict(age=34, sex="female", weight=58, height=162, wrist_angle_deg=12.3, bent_wrist=False)


@pytest.fixture
def builder(catalogue):
    return CaptionBuilder(TEMPLATES, catalogue, mode="meta+classes")


@pytest.fixture
def bucketed(catalogue):
    return CaptionBuilder(TEMPLATES, catalogue, mode="meta", bucket_numbers=True)


def test_full_metadata_caption(builder):
    caption = builder.caption_for_image({"side": "right", "meta": FULL, "image_id": "x"})
    assert caption == ("X-ray of the right hand of a 34-year-old woman, 58 kg, 162 cm tall, "
                       "wrist bent 12 degrees toward the ulna.")


def test_flat_dict_and_nested_sample_agree(builder):
    assert builder.caption_for_image({"side": "right", **FULL}) == builder.caption_for_image({"side": "right", "meta": FULL})


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, np.float32("nan"), pd.NA, pd.NaT, "nan", ""])
def test_missing_values_are_said_unknown(builder, missing):
    meta = dict(age=missing, sex=missing, weight=missing, height=missing, wrist_angle_deg=missing, bent_wrist=missing)
    caption = builder.caption_for_image({"side": missing, "meta": meta})
    assert caption == ("X-ray of the hand (side unknown) of a person of unknown age and sex, weight unknown, "
                       "height unknown, wrist angle unknown.")
    assert "nan" not in caption.lower().replace("unknown", "")


def test_empty_meta_dict_does_not_crash(builder):
    assert builder.caption_for_image({"side": "left", "meta": {}}) == (
        "X-ray of the left hand of a person of unknown age and sex, weight unknown, height unknown, wrist angle unknown.")


def test_partly_missing_metadata(builder):
    meta = dict(FULL, age=math.nan, weight=pd.NA, wrist_angle_deg=None, bent_wrist=True)
    assert builder.caption_for_image({"side": "left", "meta": meta}) == (
        "X-ray of the left hand of a woman of unknown age, weight unknown, 162 cm tall, wrist bent, angle unknown.")
    meta = dict(FULL, sex=None, height=-1)  # a non-positive height is a data error: unknown
    assert builder.caption_for_image({"side": "right", "meta": meta}) == (
        "X-ray of the right hand of a 34-year-old person of unknown sex, 58 kg, height unknown, "
        "wrist bent 12 degrees toward the ulna.")


def test_numpy_and_string_numbers(builder):
    meta = dict(age=np.int64(51), sex=" male ", weight=np.float32(80.4), height="175", wrist_angle_deg=np.float64(-7.6))
    assert builder.caption_for_image({"side": "R", "meta": meta}) == (
        "X-ray of the right hand of a 51-year-old man, 80 kg, 175 cm tall, wrist bent 8 degrees toward the radius.")


def test_bucketed_numbers(bucketed):
    caption = bucketed.caption_for_image({"side": "right", "meta": FULL})
    assert caption == ("X-ray of the right hand of a woman in her thirties, 60 kg, 160 cm tall, "
                       "wrist bent 10 degrees toward the ulna.")
    meta = dict(age=19, sex="male", weight=62.5, height=187.4, wrist_angle_deg=-41)
    assert bucketed.caption_for_image({"side": "left", "meta": meta}) == (
        "X-ray of the left hand of a man in his teens, 65 kg, 185 cm tall, wrist bent 40 degrees toward the radius.")
    meta = dict(age=69.9, sex=None, weight=None, height=None, wrist_angle_deg=3.2)
    assert bucketed.caption_for_image({"side": "left", "meta": meta}) == (
        "X-ray of the left hand of a person of unknown sex in their sixties, weight unknown, height unknown, "
        "wrist bent 5 degrees toward the ulna.")


@pytest.mark.parametrize("angle,expected", [
    (0.0, "wrist straight"), (2.9, "wrist straight"), (-2.9, "wrist straight"),
    (12.4, "wrist bent 12 degrees toward the ulna"), (-12.6, "wrist bent 13 degrees toward the radius"),
    (55, "wrist bent 55 degrees toward the ulna"),
])
def test_wrist_angle_sign_and_threshold(builder, angle, expected):
    caption = builder.caption_for_image({"side": "left", "meta": dict(FULL, wrist_angle_deg=angle)})
    assert caption.endswith(expected + ".")


def test_side_comes_from_the_sample_not_the_metadata(builder):
    right = builder.caption_for_image({"side": "right", "meta": FULL})
    left = builder.caption_for_image({"side": "left", "meta": FULL})
    assert right.replace("right hand", "left hand") == left


def test_class_captions(builder, catalogue):
    captions = builder.class_captions()
    assert len(captions) == len(catalogue) == 29
    assert captions[0] == "A hand X-ray showing finger-1, the distal phalanx of the thumb."
    for caption, name, description in zip(captions, catalogue.names, catalogue.descriptions):
        assert name in caption and description in caption
    assert captions[catalogue.index("Radius")].startswith("A hand X-ray showing Radius, the distal end of the radius")
    assert len(set(captions)) == 29


def test_modes_and_caption_fn(catalogue):
    none = CaptionBuilder(TEMPLATES, catalogue, mode="none")
    assert (none.uses_meta_captions, none.uses_class_captions, none.caption_fn()) == (False, False, None)
    classes = CaptionBuilder(TEMPLATES, catalogue, mode="classes")
    assert classes.caption_fn() is None and classes.uses_class_captions
    meta = CaptionBuilder(TEMPLATES, catalogue, mode="meta")
    fn = meta.caption_fn()
    sample = {"image_id": "a", "side": "left", "meta": FULL}
    assert fn(sample) == meta.caption_for_image(sample)
    assert pickle.loads(pickle.dumps(fn))(sample) == fn(sample)  # DataLoader workers get a copy
    assert fn.variants(sample) == [meta.caption_for_image(sample),
                                   meta.caption_for_image(dict(sample, side="right"))]
    with pytest.raises(ValueError, match="mode"):
        CaptionBuilder(TEMPLATES, catalogue, mode="classes", shuffle=True)
    with pytest.raises(ValueError, match="one of"):
        CaptionBuilder(TEMPLATES, catalogue, mode="captions")


def test_shuffled_pairing_is_a_deterministic_derangement(catalogue):
    b = CaptionBuilder(TEMPLATES, catalogue, mode="meta", shuffle=True, seed=3)
    for n in range(2, 40):
        ids = [f"img{i}" for i in range(n)]
        pairing = b.shuffled_pairing(ids)
        assert sorted(pairing) == sorted(ids) and sorted(pairing.values()) == sorted(ids)  # a permutation
        assert all(donor != image for image, donor in pairing.items())
        assert pairing == b.shuffled_pairing(list(reversed(ids)))  # input order does not matter
    ids = [f"img{i}" for i in range(50)]
    other_seed = CaptionBuilder(TEMPLATES, catalogue, mode="meta", shuffle=True, seed=4)
    assert b.shuffled_pairing(ids) != other_seed.shuffled_pairing(ids)
    assert b.shuffled_pairing(["only"]) == {"only": "only"}


def test_shuffled_pairing_never_uses_the_same_person(catalogue):
    b = CaptionBuilder(TEMPLATES, catalogue, mode="meta", shuffle=True, seed=0)
    ids = [f"p{p}_{hand}" for p in range(25) for hand in "LR"]
    person = {i: i.split("_")[0] for i in ids}
    pairing = b.shuffled_pairing(ids, groups=person)
    assert all(person[donor] != person[image] for image, donor in pairing.items())
    assert sorted(pairing.values()) == sorted(ids)
    assert b.shuffled_pairing(ids, groups=[person[i] for i in ids]) == pairing  # sequence form


def test_shuffled_caption_fn_uses_donor_metadata_and_own_side(catalogue):
    b = CaptionBuilder(TEMPLATES, catalogue, mode="meta+classes", shuffle=True, seed=0)
    metas = {"a": dict(FULL, age=20), "b": dict(FULL, age=40), "c": dict(FULL, age=60)}
    fn = b.caption_fn(meta_by_image=metas)
    pairing = b.shuffled_pairing(list(metas))
    for image_id in metas:
        sample = {"image_id": image_id, "side": "left", "meta": metas[image_id]}
        donor_age = metas[pairing[image_id]]["age"]
        assert fn(sample) == b.caption_for_image({"side": "left", "meta": metas[pairing[image_id]]})
        assert f"a {donor_age}-year-old" in fn(sample) and "left hand" in fn(sample)
        assert f"a {metas[image_id]['age']}-year-old" not in fn(sample)
    with pytest.raises(KeyError, match="not in the shuffled pairing"):
        fn({"image_id": "zzz", "side": "left", "meta": FULL})
    with pytest.raises(ValueError, match="meta_by_image"):
        b.caption_fn()


def test_template_errors_name_file_and_key(tmp_path, catalogue):
    text = load_templates(TEMPLATES).source and open(load_templates(TEMPLATES).source, encoding="utf-8").read()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace('weight: "{value} kg"', 'weight: "{kilos} kg"'), encoding="utf-8")
    with pytest.raises(CaptionTemplateError, match=r"bad\.yaml.*'weight'.*kilos"):
        CaptionBuilder(bad, catalogue, mode="meta")
    bad.write_text(text.replace("wrist_unknown:", "wrist_unknwn:"), encoding="utf-8")
    with pytest.raises(CaptionTemplateError, match="missing key 'wrist_unknown'"):
        CaptionBuilder(bad, catalogue, mode="meta")
