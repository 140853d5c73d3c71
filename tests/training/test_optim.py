"""No weight decay on biases, norms, the zero-initialised text gates and the prior bias (timm's rule)."""
from __future__ import annotations

import pytest
import torch

from mmseg_text.config import load_config
from mmseg_text.training.optim import build_optimizer
from mmseg_text.models import build_model, iter_gates, text_parameters


@pytest.mark.parametrize("conditioning,head", [("cross_attn", "conv"), ("film", "text_query")])
def test_gates_biases_and_norms_are_not_decayed(conditioning, head):
    cfg = load_config(None, ["model.encoder=resnet18", f"model.conditioning={conditioning}", f"model.head={head}",
                             "model.decoder_channels=[16,16,8,8,8]", "train.weight_decay=0.05"])
    model = build_model(cfg.model, num_classes=3, text_dim=8, image_size=64)
    optimizer = build_optimizer(model, cfg.train)
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(decay_of) == sum(1 for _ in model.parameters())  # every parameter is in exactly one group
    gates = iter_gates(model)
    assert gates and all(decay_of[id(g)] == 0.0 for g in gates)
    prior_bias = model.head.conv.bias if head == "conv" else model.head.class_bias
    assert decay_of[id(prior_bias)] == 0.0
    for name, p in model.named_parameters():
        expected = 0.0 if p.ndim <= 1 or name.endswith(".bias") else 0.05
        assert decay_of[id(p)] == expected, name
    assert any(v == 0.05 for v in decay_of.values())  # convolution and linear weights are still decayed


def test_a_zero_gate_stays_zero_under_adamw_steps_without_gradient():
    # With decoupled decay on the gate, AdamW would shrink any opened gate toward "text off" every step.
    cfg = load_config(None, ["model.encoder=resnet18", "model.decoder_channels=[16,16,8,8,8]", "train.weight_decay=0.5",
                             "train.lr=0.1"])
    model = build_model(cfg.model, num_classes=3, text_dim=8, image_size=64)
    gate = iter_gates(model)[0]
    with torch.no_grad():
        gate.fill_(0.7)
    optimizer = build_optimizer(model, cfg.train)
    for _ in range(3):
        optimizer.zero_grad()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
    assert gate.item() == pytest.approx(0.7)


@pytest.mark.parametrize("conditioning,head", [("cross_attn", "conv"), ("film", "text_query")])
def test_text_lr_scale_sets_the_learning_rate_of_the_text_modules_only(conditioning, head):
    overrides = ["model.encoder=resnet18", f"model.conditioning={conditioning}", f"model.head={head}",
                 "model.decoder_channels=[16,16,8,8,8]", "train.lr=0.01"]
    model = build_model(load_config(None, overrides).model, num_classes=3, text_dim=8, image_size=64)
    plain = build_optimizer(model, load_config(None, overrides).train)
    assert len(plain.param_groups) == 2  # scale 1: timm's two decay groups, unchanged
    optimizer = build_optimizer(model, load_config(None, overrides + ["train.text_lr_scale=0.1"]).train)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lr_of) == sum(1 for _ in model.parameters())
    text = {id(p) for p in text_parameters(model)}
    assert all(id(g) in text for g in iter_gates(model))
    if head == "text_query":
        assert all(id(p) in text for p in model.head.class_proj.parameters())
        assert id(model.head.pixel_proj.weight) not in text  # the pixel side reads the image
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == pytest.approx(0.001 if id(p) in text else 0.01), name
        assert decay_of[id(p)] == dict((id(q), g["weight_decay"]) for g in plain.param_groups for q in g["params"])[id(p)]
    assert not any(id(p) in text for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="train.text_lr_scale"):
        load_config(None, ["train.text_lr_scale=0"])
