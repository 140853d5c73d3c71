"""Caption dropout (``text.drop_p``): a training image's metadata facts spoken as unknown with probability p."""
from __future__ import annotations

import pytest
import yaml

from mmseg_text.config import ConfigError, load_config
from mmseg_text.text import CaptionBuilder

from ..runs import tiny_config_dict

FULL = dict(age=34, sex="female", weight=58, height=162, wrist_angle_deg=12.3, bent_wrist=False)


def test_a_dropped_caption_is_the_caption_prediction_gives_without_metadata(catalogue):
    builder = CaptionBuilder("caption_templates", catalogue, mode="meta")
    fn = builder.caption_fn()
    sample = {"image_id": "a", "side": "left", "meta": FULL}
    dropped = fn(sample, drop=True)
    assert dropped == builder.caption_for_image({"side": "unknown", "meta": {}}) != fn(sample)
    assert "34" not in dropped and "left" not in dropped and "34" in fn(sample)
    assert fn.variants(sample, with_dropped=True) == fn.variants(sample) + [dropped]


@pytest.mark.parametrize("overrides, match", [(["text.drop_p=1.0"], "text.drop_p"), (["text.drop_p=-0.1"], "text.drop_p"),
                                              (["text.drop_p=0.3", "text.mode=classes"], "text.mode=classes")])
def test_bad_drop_p_is_an_error_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_training_drops_about_p_of_the_captions_reproducibly_and_validation_none(tiny_root, tmp_path):
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.training.data_setup import build_run_data

    doc = tiny_config_dict(tiny_root, tmp_path / "run", tmp_path / "cache")
    doc["text"]["drop_p"] = 0.5
    path = tmp_path / "drop.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    data = build_run_data(cfg, load_catalogue(cfg.data.classes), progress=False)
    builder = data.text.builder
    unknown = {builder.caption_for_image({"side": "unknown", "meta": {}})}

    def dropped(dataset, epoch):
        dataset.set_epoch(epoch)
        return [dataset[i]["caption"] in unknown for i in range(len(dataset))]

    draws = [d for epoch in range(8) for d in dropped(data.train, epoch)]
    assert 0.3 < sum(draws) / len(draws) < 0.7, sum(draws) / len(draws)
    assert dropped(data.train, 3) == dropped(data.train, 3)  # seeded: a resumed run drops the same captions
    assert not any(dropped(data.val, 0))  # validation always reads the full caption
    data.train.set_epoch(0)
    captions = [data.train[i]["caption"] for i in range(len(data.train))]
    assert unknown & set(captions)
    context = data.text.context(captions, len(captions))  # every dropped caption was warmed before the tower went
    assert context.tokens.shape[0] == len(captions)
