"""Config loading: defaults, files, dotted overrides, one-line errors, shipped configs valid."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmseg_text.config import ConfigError, config_from_dict, load_config, to_yaml

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
    with pytest.raises(ConfigError, match="text_query needs class-name embeddings"):
        load_config(None, ["model.head=text_query", "text.mode=meta"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_text_mode_none_adapts_the_default_conditioning_and_round_trips():
    cfg = load_config(None, ["text.mode=none"])  # conditioning left at its default: adapts, with a log line
    assert cfg.model.conditioning == "none"
    again = config_from_dict(__import__("yaml").safe_load(to_yaml(cfg)))
    assert again == cfg


def test_explicit_contradiction_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="model.conditioning=cross_attn reads text but text.mode=none"):
        load_config(None, ["model.conditioning=cross_attn", "text.mode=none"])
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  conditioning: film\n")  # set in the file: explicit too
    with pytest.raises(ConfigError, match="model.conditioning=film reads text"):
        load_config(path, ["text.mode=none"])
    assert load_config(path, ["text.mode=none", "model.conditioning=none"]).model.conditioning == "none"


def test_every_model_choice_is_accepted_and_an_unknown_one_is_named():
    # (that the registries and choices.py list the same names: tests/test_registries.py)
    from mmseg_text.choices import CONDITIONINGS, HEADS, NORMS

    for value in CONDITIONINGS:
        assert load_config(None, [f"model.conditioning={value}"]).model.conditioning == value
    for value in NORMS:
        assert load_config(None, [f"model.norm={value}"]).model.norm == value
    for value in HEADS:
        assert load_config(None, [f"model.head={value}"]).model.head == value
    with pytest.raises(ConfigError, match=r"'model.norm' must be one of \['batch', 'group'\], got 'layer'"):
        load_config(None, ["model.norm=layer"])


def test_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  lr: 0.01\n  epochs: [1, 2\nmodel:\n  head: conv\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message == f"{path}: invalid YAML at line 4, column 6: expected ',' or ']', but got ':'"
    assert "\n" not in message
    path.write_text("train:\n  lr: 0.01\n\tepochs: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}: invalid YAML at line 3, column 1: found character '\\t'"):
        load_config(path)


def test_config_pointing_at_a_directory_says_so(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == f"--config {tmp_path} is a directory; give the path of a YAML config file"


def test_undecodable_config_file_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("output_dir: r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path}: cannot read the config file \(UnicodeDecodeError: "):
        load_config(path)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml")), ids=lambda p: p.name)
def test_a_shipped_config_that_says_nothing_is_downloaded_names_no_hub_tag(path):
    """A header that promises an offline run must not rely on hub tags (open_clip ``openai``, timm's ``timm``)."""
    text = path.read_text(encoding="utf-8")
    cfg = load_config(path)
    hub = [key for key, value in (("text.pretrained", cfg.text.tower == "open_clip" and cfg.text.pretrained),
                                  ("model.encoder_weights", cfg.model.encoder_weights))
           if value and not str(value).startswith(("package:", "/", ".")) and not Path(str(value)).suffix]
    if "nothing is downloaded" in text.lower():
        assert not hub, f"{path.name} says nothing is downloaded, but {hub} are hub tags"
    if hub:
        assert "download" in text.lower(), f"{path.name} uses hub tags {hub} and does not say they download"


def test_a_packaged_config_loads_by_name_and_an_unknown_name_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: as from a wheel
    assert load_config("demo").model.encoder == load_config("demo.yaml").model.encoder == "tf_efficientnet_lite0"
    with pytest.raises(ConfigError, match=r"config file not found: nope .*\['demo', 'metadata_study', 'swin_unet_clip', 'unet_effnet_clip'\]"):
        load_config("nope")


def test_help_shows_plain_text_and_other_ranks_log_only_warnings(monkeypatch):
    from mmseg_text.cli.common import help_text, is_non_main_rank

    assert help_text("``mmseg-train``: runs :func:`~mmseg_text.training.loop.train`.\n\nMore.") == \
        "mmseg-train: runs mmseg_text.training.loop.train."
    monkeypatch.setenv("RANK", "1")
    assert is_non_main_rank()
    monkeypatch.setenv("RANK", "0")
    assert not is_non_main_rank()
