"""The positive control's prompted groups: only the asked groups are targets, the caption says which, every
variant of a seed sees the same targets, and the shuffled control asks for an independent draw."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmseg_text.config import ConfigError, load_config
from mmseg_text.data.dataset import SegmentationDataset
from mmseg_text.data.index import build_index
from mmseg_text.data.preprocess import Preprocessor
from mmseg_text.data.prompts import GroupPrompt
from mmseg_text.studies.ablation import POSITIVE_CONTROL, aggregate
from mmseg_text.text.templates import CaptionTemplateError, load_templates

REQUEST = load_templates().request  # the bundled wording


def test_subsets_draws_and_masks(catalogue):
    prompt = GroupPrompt(tuple(catalogue.groups), seed=0, request=REQUEST)
    assert prompt.groups == ("finger", "carpal", "forearm")
    assert len(prompt.subsets()) == 7 and ("finger", "carpal", "forearm") in prompt.subsets()
    draws = [prompt.draw(epoch, i) for epoch in range(3) for i in range(20)]
    assert all(t == a for t, a in draws) and len({t for t, _ in draws}) == 7
    assert prompt.draw(1, 5) == GroupPrompt(tuple(catalogue.groups), seed=0, request=REQUEST).draw(1, 5)
    shuffled = GroupPrompt(tuple(catalogue.groups), seed=0, request=REQUEST, shuffled=True)
    pairs = [shuffled.draw(0, i) for i in range(40)]
    assert [t for t, _ in pairs] == [prompt.draw(0, i)[0] for i in range(40)]  # same targets as the real prompt
    assert sum(t != a for t, a in pairs) > 25  # but the caption mostly asks for something else
    masks = np.ones((len(catalogue), 4, 4), bool)
    kept = prompt.keep(masks, ("carpal",))
    assert [bool(kept[k].any()) for k in range(len(catalogue))] == [g == "carpal" for g in catalogue.groups]
    assert prompt.sentence(("finger", "carpal", "forearm")) == "Segment only the finger, carpal and forearm bones."


def test_the_request_wording_comes_from_the_templates_file(tmp_path, catalogue):
    bundled = load_templates()
    text = Path(bundled.source).read_text(encoding="utf-8")
    french = tmp_path / "fr.yaml"
    french.write_text(text.replace('prompt: "Segment only the {groups} bones."', 'prompt: "Segmenter les os {groups}."')
                      .replace("prompt_and: and", "prompt_and: et"), encoding="utf-8")
    prompt = GroupPrompt(tuple(catalogue.groups), seed=0, request=load_templates(french).request)
    assert prompt.sentence(("finger", "carpal")) == "Segmenter les os finger et carpal."
    old = tmp_path / "old.yaml"  # a template file from before the request was wording (an older export)
    old.write_text("\n".join(line for line in text.splitlines() if not line.startswith("prompt")), encoding="utf-8")
    templates = load_templates(old)  # still reads for captions
    with pytest.raises(CaptionTemplateError, match=r"old.yaml: data.prompted_groups needs the key\(s\) \['prompt', 'prompt_and'\]"):
        templates.request(("finger",))


def test_dataset_targets_follow_the_caption_and_text_off_sees_the_same_targets(tiny_root, tmp_path, catalogue):
    cfg = load_config(None, [f"data.root={tiny_root}", "data.num_folds=2"])
    index = build_index(cfg.data, catalogue, progress=False)
    pre = Preprocessor(image_size=64, mean=(0.5,), std=(0.5,))
    prompt = GroupPrompt(tuple(catalogue.groups), seed=7, request=REQUEST)

    def dataset(caption_fn):
        return SegmentationDataset(index.records, index.facts, class_names=catalogue.names, preprocess=pre,
                                   cache_dir=tmp_path, augment_seed=7, progress=False, caption_fn=caption_fn,
                                   prompt=prompt)

    text_on, text_off = dataset(lambda s: "X-ray."), dataset(None)
    plain = SegmentationDataset(index.records, index.facts, class_names=catalogue.names, preprocess=pre,
                                cache_dir=tmp_path, augment_seed=7, progress=False)
    groups = np.array(catalogue.groups)
    for i in range(len(text_on)):
        on, off, full = text_on[i], text_off[i], plain[i]
        target, _ = prompt.draw(0, i)
        assert on["caption"] == "X-ray. " + prompt.sentence(target)
        np.testing.assert_array_equal(on["masks"].numpy(), off["masks"].numpy())  # paired targets
        present = on["masks"].flatten(1).any(1).numpy()
        assert set(groups[present]) <= set(target)
        np.testing.assert_array_equal(on["masks"].numpy()[np.isin(groups, target)],
                                      full["masks"].numpy()[np.isin(groups, target)])


def test_prompted_groups_need_a_caption_per_image_and_every_control_variant_is_valid():
    with pytest.raises(ConfigError, match="prompted_groups.*text.mode=classes"):
        load_config(None, ["data.prompted_groups=true", "text.mode=classes"])
    for variant in POSITIVE_CONTROL:
        cfg = load_config(None, list(variant.overrides))
        assert cfg.data.prompted_groups
    names = [v.name for v in POSITIVE_CONTROL]
    assert names == ["none", "cross_attn", "cross_attn shuffled", "film", "film shuffled"]  # no text_query: it reads no caption


def test_each_conditioning_type_is_compared_with_its_own_shuffled_twin():
    runs = {"none": {0: {"mean": 0.5}, 1: {"mean": 0.52}},
            "cross_attn": {0: {"mean": 0.8}, 1: {"mean": 0.82}},
            "cross_attn shuffled": {0: {"mean": 0.49}, 1: {"mean": 0.5}},
            "film": {0: {"mean": 0.6}, 1: {"mean": 0.61}},
            "film shuffled": {0: {"mean": 0.58}, 1: {"mean": 0.6}}}
    result = aggregate(runs)
    assert set(result["vs_placebo"]) == {"cross_attn", "film"}
    assert result["vs_placebo"]["cross_attn"]["diff"] == pytest.approx(0.315)
    assert result["vs_placebo"]["film"]["diff"] == pytest.approx(0.015)
    assert result["vs_baseline"]["cross_attn"]["diff"] == pytest.approx(0.30)
