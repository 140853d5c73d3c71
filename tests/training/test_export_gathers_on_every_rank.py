"""best/ is exported from weights gathered on every process (``accelerator.get_state_dict``): under FSDP that call
is a collective, so a rank that skipped it would leave the main process waiting, or export a shard."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from mmseg_text.config import load_config
from mmseg_text.training import loop


class RecordingAccelerator:
    def __init__(self, main: bool, calls: list):
        self.is_main_process = main
        self.calls = calls

    def get_state_dict(self, model):
        self.calls.append(("get_state_dict", self.is_main_process))
        return {k: v + 1.0 for k, v in model.state_dict().items()}  # distinguishable from model.state_dict()

    def unwrap_model(self, model):
        return model

    def wait_for_everyone(self):
        self.calls.append(("wait", self.is_main_process))


def test_every_rank_gathers_and_only_the_main_one_writes_the_gathered_weights(tmp_path, monkeypatch):
    exported = []
    monkeypatch.setattr(loop, "export_model", lambda directory, model, cfg, catalogue, pre, **kw: exported.append(kw))
    model = torch.nn.Linear(2, 2)
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    result = SimpleNamespace(thresholds=[0.5], postprocess=["none"], temperatures=None, sweep=None,
                             to_dict=lambda catalogue: {})
    data = SimpleNamespace(preprocess=None)
    calls: list = []
    for main in (False, True):  # rank 1, then rank 0
        loop._export_best(RecordingAccelerator(main, calls), model, cfg, None, data, result)
    assert calls == [("get_state_dict", False), ("wait", False), ("get_state_dict", True), ("wait", True)]
    assert len(exported) == 1  # the main process writes
    assert exported[0]["postprocess"] == ["none"]  # the chosen rules travel with the weights
    torch.testing.assert_close(exported[0]["state_dict"]["weight"], model.weight + 1.0)  # the gathered weights


def test_save_model_dir_writes_the_given_state_dict(tmp_path):
    from mmseg_text.models import build_model, load_model, save_model_dir

    from tests.models.conftest import tiny_cfg

    cfg = tiny_cfg(conditioning="none")
    model = build_model(cfg, num_classes=3, text_dim=None, image_size=64)
    gathered = {k: torch.full_like(v, 0.25) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_model_dir(tmp_path / "best", model, {"model": cfg.__dict__}, state_dict=gathered)
    loaded, _ = load_model(tmp_path / "best")
    assert all(torch.equal(v, gathered[k]) for k, v in loaded.state_dict().items())
