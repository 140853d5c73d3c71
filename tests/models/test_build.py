"""build_model lookups, and checkpoint directories: atomic save, pickle-free load, identical logits."""
import dataclasses
import json
import os

import pytest
import torch
import yaml

from mmseg_text.config import Config, ConfigError
from mmseg_text.models import (CONFIG_FILE, META_FILE, WEIGHTS_FILE, build_model, iter_gates, load_model,
                               save_model_dir)

from .conftest import NUM_CLASSES, TEXT_DIM, TINY_SWIN, images, make_context, tiny_cfg


def _run_config(model_cfg):
    cfg = Config()
    cfg.model = model_cfg
    return cfg.to_dict()


def _trained_like(model):
    """Open the gates and move every weight, so a round trip that lost anything would show."""
    with torch.no_grad():
        for gate in iter_gates(model):
            gate.fill_(0.7)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(0.1)
    return model.eval()


def test_unknown_options_are_listed():
    with pytest.raises(ValueError, match=r"'model.head' must be one of \['conv', 'text_query'\], got 'mlp'"):
        build_model(tiny_cfg(head="mlp"), num_classes=3, text_dim=TEXT_DIM)
    with pytest.raises(ValueError, match=r"must be one of \['none', 'cross_attn', 'film'\]"):
        build_model(tiny_cfg(conditioning="concat"), num_classes=3, text_dim=TEXT_DIM)
    with pytest.raises(ConfigError, match="needs text_dim"):
        build_model(tiny_cfg(conditioning="film"), num_classes=3)
    with pytest.raises(ConfigError, match="unknown config key 'model.encoderr'"):
        build_model({"encoderr": "resnet18"}, num_classes=3)


def test_text_free_model_needs_no_text_dim_and_mapping_config_works():
    model = build_model(dataclasses.asdict(tiny_cfg(conditioning="none")), num_classes=4)
    assert model.text_dim is None and not model.has_text_modules
    assert model(images(1)).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("conditioning,head", [("cross_attn", "text_query"), ("film", "conv"), ("none", "conv")])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, conditioning, head):
    cfg = tiny_cfg(conditioning=conditioning, head=head)
    model = _trained_like(build_model(cfg, num_classes=NUM_CLASSES, text_dim=TEXT_DIM, image_size=64))
    thresholds = {"finger-1": 0.4, "Radius": 0.55}
    out = save_model_dir(tmp_path / "best", model, _run_config(cfg), extra={"thresholds.json": thresholds})
    assert sorted(os.listdir(out)) == sorted([WEIGHTS_FILE, CONFIG_FILE, META_FILE, "thresholds.json"])
    assert sorted(os.listdir(tmp_path)) == ["best"]  # no temporary directory left behind
    loaded, run_cfg = load_model(out)
    assert run_cfg["model"]["conditioning"] == conditioning and set(run_cfg) >= {"data", "text", "model", "train"}
    assert json.loads((out / "thresholds.json").read_text()) == thresholds
    assert json.loads((out / META_FILE).read_text())["num_classes"] == NUM_CLASSES
    assert not loaded.training
    x, ctx = images(2), make_context(2)
    with torch.no_grad():
        assert torch.equal(model(x, ctx), loaded(x, ctx))


def test_swin_checkpoint_keeps_its_input_size(tmp_path):
    cfg = tiny_cfg("swin_tiny_patch4_window7_224", encoder_kwargs=dict(TINY_SWIN))
    model = _trained_like(build_model(cfg, num_classes=3, text_dim=TEXT_DIM, image_size=128, in_chans=1))
    loaded, _ = load_model(save_model_dir(tmp_path / "ck", model, _run_config(cfg)))
    x, ctx = images(1, 128, in_chans=1), make_context(1, classes=3)
    with torch.no_grad():
        assert torch.equal(model(x, ctx), loaded(x, ctx))


def test_load_never_fetches_encoder_weights_again(tmp_path):
    cfg = tiny_cfg(conditioning="none")
    model = build_model(cfg, num_classes=3)
    saved = _run_config(dataclasses.replace(cfg, encoder_weights="timm"))  # would need the hub
    out = save_model_dir(tmp_path / "ck", model, saved)
    loaded, run_cfg = load_model(out)
    assert run_cfg["model"]["encoder_weights"] == "timm"
    assert torch.equal(loaded.encoder.model.conv1.weight, model.encoder.model.conv1.weight)


def test_save_replaces_an_existing_checkpoint(tmp_path):
    cfg = tiny_cfg(conditioning="none")
    first, second = build_model(cfg, num_classes=3), _trained_like(build_model(cfg, num_classes=3))
    save_model_dir(tmp_path / "ck", first, _run_config(cfg), extra={"thresholds": {"a": 1}})
    save_model_dir(tmp_path / "ck", second, _run_config(cfg))
    assert sorted(os.listdir(tmp_path)) == ["ck"] and not (tmp_path / "ck" / "thresholds.json").exists()
    loaded, _ = load_model(tmp_path / "ck")
    assert torch.equal(loaded.head.conv.weight, second.head.conv.weight)


def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    cfg = tiny_cfg(conditioning="none")
    model = build_model(cfg, num_classes=3)
    save_model_dir(tmp_path / "ck", model, _run_config(cfg))
    with pytest.raises(TypeError):
        save_model_dir(tmp_path / "ck", model, _run_config(cfg), extra={"bad.json": {"x": object()}})
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    assert sorted(os.listdir(tmp_path / "ck")) == sorted([WEIGHTS_FILE, CONFIG_FILE, META_FILE])


def test_config_must_describe_the_model(tmp_path):
    model = build_model(tiny_cfg(conditioning="none"), num_classes=3)
    with pytest.raises(ValueError, match="does not describe the model"):
        save_model_dir(tmp_path / "ck", model, _run_config(tiny_cfg(conditioning="film")))
    with pytest.raises(ValueError, match="full run config mapping"):
        save_model_dir(tmp_path / "ck", model, {"encoder": "resnet18"})


def test_directory_without_weights_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / CONFIG_FILE).write_text(yaml.safe_dump(_run_config(tiny_cfg())))
    with pytest.raises(FileNotFoundError) as err:
        load_model(tmp_path / "empty")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'empty'}: no model.safetensors") and "\n" not in message
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_model(tmp_path / "does-not-exist")


def test_weights_of_another_model_are_rejected(tmp_path):
    cfg = tiny_cfg(conditioning="none")
    out = save_model_dir(tmp_path / "ck", build_model(cfg, num_classes=3), _run_config(cfg))
    other = _run_config(tiny_cfg(conditioning="none", decoder_channels=[16, 16, 16, 8, 8]))
    (out / CONFIG_FILE).write_text(yaml.safe_dump(other))
    with pytest.raises(RuntimeError, match="does not match the model"):
        load_model(out)


def test_group_norm_model_round_trip(tmp_path):
    cfg = tiny_cfg(conditioning="film", norm="group")
    model = _trained_like(build_model(cfg, num_classes=3, text_dim=TEXT_DIM))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.decoder.modules())
    loaded, _ = load_model(save_model_dir(tmp_path / "ck", model, _run_config(cfg)))
    x, ctx = images(1), make_context(1, classes=3)
    with torch.no_grad():
        assert torch.equal(model(x, ctx), loaded(x, ctx))
