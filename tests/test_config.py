"""Config loading: defaults, files, dotted overrides, one-line errors, shipped configs valid."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmseg_text.config import ConfigError, config_from_dict, load_config, resolve, to_yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.data.image_size >= 64 and cfg.output_dir


def test_overrides_are_typed_and_unknown_keys_are_named():
    cfg = load_config(None, ["train.lr=0.01", "model.decoder_channels=[8,8,8,8,8]", "text.pretrained=null"])
    assert cfg.train.lr == 0.01 and cfg.model.decoder_channels == [8] * 5 and cfg.text.pretrained is None
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"'text\.mode' must be one of"):
        load_config(None, ["text.mode=captions"])
    with pytest.raises(ConfigError, match="text_query needs bone-name embeddings"):
        load_config(None, ["model.head=text_query", "text.mode=meta"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_text_mode_none_resolves_to_no_conditioning_and_round_trips():
    cfg = resolve(load_config(None, ["text.mode=none"]))
    assert cfg.model.conditioning == "none"
    again = config_from_dict(__import__("yaml").safe_load(to_yaml(cfg)))
    assert again == cfg
