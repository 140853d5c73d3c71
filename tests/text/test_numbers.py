"""model.conditioning_source=numbers: metadata as normalised numbers with missing flags, through an MLP."""
import math

import numpy as np
import pytest
import torch

from mmseg_text.config import ConfigError, load_config
from mmseg_text.models import TextContext, build_model, load_model, save_model_dir, iter_gates, text_parameters
from mmseg_text.text.caption_encoder import build_caption_encoder
from mmseg_text.text.numbers import FACTS, SCALES, WIDTH, NumberEncoder, fact_vector, number_tokens
from tests.models.conftest import images, tiny_cfg

FULL = {"age": 55, "sex": "male", "weight": 85.0, "height": 178, "wrist_angle_deg": -12.0}


def test_a_known_fact_is_its_normalised_value_with_no_flag():
    values, missing = fact_vector("right", FULL)
    assert missing.tolist() == [0.0] * len(FACTS)
    expected = {"age": (55 - 40) / 15, "sex": 1.0, "weight": (85 - 70) / 15, "height": (178 - 168) / 10,
                "side": 1.0, "wrist_angle_deg": -12 / 30}
    for i, name in enumerate(FACTS):
        assert math.isclose(values[i], expected[name], rel_tol=1e-6), name


@pytest.mark.parametrize("bad", [None, float("nan"), "", "n/a", -3, "heavy"])
def test_a_missing_or_unreadable_value_sets_the_flag_never_a_silent_zero(bad):
    meta = dict(FULL, weight=bad)
    values, missing = fact_vector("left", meta)
    i = FACTS.index("weight")
    assert missing[i] == 1.0 and values[i] == 0.0
    assert missing.sum() == 1.0  # only that fact
    # a real value that normalises to exactly 0 is told apart from a missing one by the flag
    zero_values, zero_missing = fact_vector("left", dict(FULL, weight=SCALES["weight"][0]))
    assert zero_values[i] == 0.0 and zero_missing[i] == 0.0


def test_unknown_side_and_sex_are_missing():
    values, missing = fact_vector("unknown", {"sex": "X"})
    assert missing[FACTS.index("side")] == 1.0 and missing[FACTS.index("sex")] == 1.0
    assert missing.sum() == len(FACTS)  # nothing known at all
    assert np.all(values == 0)


def test_tokens_carry_which_fact_its_value_and_its_flag_and_pool_to_the_sum():
    values, missing = fact_vector("right", dict(FULL, age=None))
    tokens, pooled = number_tokens(values[None], missing[None])
    f = len(FACTS)
    assert tokens.shape == (1, f, WIDTH) and pooled.shape == (1, WIDTH)
    age = FACTS.index("age")
    assert torch.equal(tokens[0, age, :f], torch.eye(f)[age])
    assert tokens[0, age, 2 * f + age] == 1.0 and tokens[0, age, f + age] == 0.0
    assert torch.allclose(pooled[0, f:2 * f], torch.as_tensor(values))
    assert torch.allclose(pooled[0, 2 * f:], torch.as_tensor(missing))


def test_encoder_context_from_a_batch_follows_the_flipped_side():
    enc = NumberEncoder()
    batch = {"image": torch.zeros(2, 3, 8, 8), "side": ["left", "right"], "meta": [FULL, FULL]}
    ctx = enc.batch_context(batch, "cpu")
    side = FACTS.index("side")
    f = len(FACTS)
    assert ctx.tokens.shape == (2, f, WIDTH)
    assert ctx.pooled[0, f + side] == -1.0 and ctx.pooled[1, f + side] == 1.0
    # prediction path: caption(side, meta) then context(list)
    again = enc.context([enc.caption("left", FULL), enc.caption("right", FULL)], 2)
    assert torch.equal(again.tokens, ctx.tokens)
    with pytest.raises(ValueError, match="numbers needs the facts"):
        enc.context(None, 2)


def _numbers_model(conditioning="cross_attn"):
    torch.manual_seed(3)
    return build_model(tiny_cfg(conditioning=conditioning, conditioning_source="numbers", numbers_dim=16),
                       num_classes=5, text_dim=WIDTH, image_size=64)


@pytest.mark.parametrize("conditioning", ["cross_attn", "film"])
def test_numbers_model_equals_the_unconditioned_network_at_step_0_and_reads_the_numbers_when_open(conditioning):
    model = _numbers_model(conditioning).eval()
    torch.manual_seed(3)
    plain = build_model(tiny_cfg(conditioning="none"), num_classes=5, image_size=64).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()}, strict=True)
    enc = NumberEncoder()
    young = enc.context([enc.caption("left", dict(FULL, age=20, height=150))], 1)
    old = enc.context([enc.caption("left", dict(FULL, age=69, height=187))], 1)
    x = images(1, 64)
    with torch.no_grad():
        assert torch.allclose(model(x, young), plain(x), atol=1e-6)
        assert torch.allclose(model(x, old), plain(x), atol=1e-6)
        for gate in iter_gates(model):
            gate.fill_(1.0)
        diff = (model(x, young) - model(x, old)).abs().max().item()
    assert diff > 1e-4  # once the gates open, the numbers reach the logits
    adapter = {id(p) for p in model.context_adapter.parameters()}
    assert adapter <= {id(p) for p in text_parameters(model)}  # train.text_lr_scale applies to the MLP


def test_numbers_model_checks_the_width_and_saves_its_input_width():
    model = _numbers_model()
    assert model.text_dim == WIDTH  # model_meta.json records the number tokens' width, load_model rebuilds the MLP
    ctx = NumberEncoder().context([{"side": "left", "meta": FULL}], 1)
    narrow = TextContext(ctx.tokens[:, :, :4], ctx.mask, ctx.pooled[:, :4])
    with pytest.raises(ValueError, match="width 4"):
        model(images(1, 64), narrow)


def test_a_numbers_model_directory_round_trips(tmp_path):
    model = _numbers_model().eval()
    for gate in iter_gates(model):
        torch.nn.init.constant_(gate, 0.5)
    cfg = load_config(None, ["text.mode=meta", "model.conditioning_source=numbers", "model.numbers_dim=16"])
    cfg.model = tiny_cfg(conditioning_source="numbers", numbers_dim=16)
    save_model_dir(tmp_path / "best", model, cfg)
    loaded, _ = load_model(tmp_path / "best")
    ctx = NumberEncoder().context([{"side": "right", "meta": FULL}], 1)
    with torch.no_grad():
        assert torch.equal(loaded(images(1, 64), ctx), model(images(1, 64), ctx))


def test_config_builds_the_number_encoder_and_rejects_what_it_cannot_do():
    cfg = load_config(None, ["text.mode=meta", "model.conditioning_source=numbers"])
    assert isinstance(build_caption_encoder(cfg, catalogue=None), NumberEncoder)
    for bad, match in ((["text.mode=meta+classes"], "text.mode=meta"),
                       (["text.mode=meta", "text.shuffle=true"], "text.shuffle"),
                       (["text.mode=meta", "model.conditioning=none"], "cross_attn or film"),
                       (["text.mode=meta", "model.conditioning_source=words"], "conditioning_source")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, bad + (["model.conditioning_source=numbers"] if "words" not in bad[-1] else []))
