"""Build a segmenter from ``cfg.model`` (a plain lookup), and save / load model directories (the exported ``best/``).

A model directory holds
  model.safetensors   the state dict (no pickle)
  config.yaml         the full run config mapping (data / text / model / train / predict / output_dir)
  model_meta.json     what the config does not say: num_classes, text_dim, image_size, in_chans
  <extra>.json        optional, e.g. thresholds.json
and is written to a temporary sibling directory first, then renamed into place, so a crash never
leaves a half-written model directory. ``load_model`` rebuilds the model from config.yaml + model_meta.json
(never downloading encoder weights: the directory has them) and loads the tensors strictly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from mmseg_text import choices
from mmseg_text.choices import COORD_CHANNELS
from mmseg_text.config import ConfigError, ModelConfig
from mmseg_text.io import atomic_write_json, atomic_write_text, write_failure
from mmseg_text.run_layout import CONFIG_FILE, META_FILE, WEIGHTS_FILE

from .decoder import UNetDecoder
from .encoders import TimmEncoder
from .registry import CONDITIONING_SOURCES, HEADS, lookup
from .segmenter import TextConditionedSegmenter

META_VERSION = 1


class ModelDirError(ValueError):
    """A model directory file is damaged (truncated, corrupt, not what save_model_dir wrote); names the file."""


def _raise_write_failure(err: Exception, directory: Path) -> None:
    """Re-raise ``err`` as a DiskWriteError (no space / read-only / permission denied) naming ``directory``."""
    failure = write_failure(err, directory, "checkpoint")
    if failure is None:
        raise err
    raise failure from err


def read_model_file(path: Path, parse: Callable[[str], Any], kind: str) -> Any:
    """``parse`` of a checkpoint file's text; a damaged file is a ModelDirError naming it."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelDirError(f"{path}: the checkpoint is damaged: {kind} does not parse ({detail}); "
                              "re-export the checkpoint or use another one") from None

def as_model_config(model_cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """A ``ModelConfig`` from itself or from the ``model`` mapping of a saved config.yaml."""
    if isinstance(model_cfg, ModelConfig):
        return model_cfg
    if not isinstance(model_cfg, Mapping):
        raise TypeError(f"model config must be a ModelConfig or a mapping, got {type(model_cfg).__name__}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(model_cfg) - known)
    if unknown:
        raise ConfigError(f"unknown config key 'model.{unknown[0]}'")
    return ModelConfig(**dict(model_cfg))


def component_seed(base_seed: int, component: str) -> int:
    """The init seed of one model component: a function of the run's seed and the component's name only."""
    return (base_seed * 1_000_003 + zlib.crc32(component.encode())) % 2 ** 63


@contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Draw a component's initial weights from its own CPU stream; the global stream is left as it was.

    Only the CPU generator is seeded (modules are built on the CPU): ``torch.manual_seed`` would also reseed
    the CUDA generators, which the fork does not restore.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def build_model(model_cfg: ModelConfig | Mapping[str, Any], *, num_classes: int, text_dim: Optional[int] = None,
                image_size: Optional[int] = None, in_chans: int = 3) -> TextConditionedSegmenter:
    """encoder (timm) -> UNet decoder (+ text blocks) -> head, as ``model_cfg`` says.

    ``text_dim`` is the text tower width (needed unless conditioning=none and head=conv);
    ``model.conditioning_source=numbers`` puts a small MLP (``MetadataEmbedder``) in front of the
    conditioning: ``text_dim`` is then the width of the metadata number tokens, ``model.numbers_dim`` what the
    blocks read.
    ``image_size`` is the square input size (fixed-size backbones such as Swin are built for it).

    Paired initialisation: the encoder, the decoder and the head each draw from a stream seeded by
    ``torch.initial_seed()`` (the last ``torch.manual_seed``) and the component's name, and the decoder's
    text blocks are created after its convolutions. So for one seed, the text-off model and every text-on
    variant start from the same weights wherever they share a parameter, and draws made before this call
    (a text tower loading, say) change nothing; building twice under one seed gives the same model.
    """
    cfg = as_model_config(model_cfg)
    build_head = lookup(HEADS, "model.head", cfg.head)
    reads_text = (lookup(choices.CONDITIONINGS, "model.conditioning", cfg.conditioning).reads_text
                  or choices.HEADS[cfg.head].needs_class_embeddings)
    if reads_text and text_dim is None:
        raise ConfigError(f"model.conditioning={cfg.conditioning!r} / model.head={cfg.head!r} read text: "
                          "build_model needs text_dim (the text tower width)")
    base_seed = torch.initial_seed()
    adapter = None
    build_adapter = lookup(CONDITIONING_SOURCES, "model.conditioning_source", cfg.conditioning_source)
    if build_adapter is not None and reads_text:  # e.g. the metadata numbers' MLP: text_dim is its input width
        with _seeded_init(component_seed(base_seed, f"source:{cfg.conditioning_source}")):
            adapter = build_adapter(text_dim, cfg.numbers_dim)
        text_dim = cfg.numbers_dim
    with _seeded_init(component_seed(base_seed, "encoder")):
        encoder = TimmEncoder(cfg.encoder, in_chans=in_chans, image_size=image_size, weights=cfg.encoder_weights,
                              extra_chans=COORD_CHANNELS if cfg.coord_channels else 0, **dict(cfg.encoder_kwargs))
    with _seeded_init(component_seed(base_seed, "decoder")):  # blocks first, then the text blocks (decoder.py)
        decoder = UNetDecoder(encoder.feature_channels, cfg.decoder_channels,
                              encoder_reductions=encoder.feature_reductions, conditioning=cfg.conditioning,
                              condition_stages=cfg.condition_stages, text_dim=text_dim, attn_heads=cfg.attn_heads,
                              attn_ff_mult=cfg.attn_ff_mult, dropout=cfg.dropout, norm=cfg.norm)
    with _seeded_init(component_seed(base_seed, f"head:{cfg.head}")):
        head = build_head(decoder.out_channels, num_classes, text_dim, cfg.query_dim)
    return TextConditionedSegmenter(encoder, decoder, head, context_adapter=adapter)


def model_meta(model: TextConditionedSegmenter) -> Dict[str, Any]:
    """The build arguments that are not in the config (they come from the catalogue / text tower / data)."""
    return {"format_version": META_VERSION, "num_classes": model.num_classes, "text_dim": model.text_dim,
            "image_size": model.encoder.image_size, "in_chans": model.encoder.in_chans}


def _config_mapping(cfg: Any) -> Dict[str, Any]:
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    elif dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("model"), Mapping):
        raise ValueError("save_model_dir needs the full run config mapping (with a 'model' section)")
    return dict(cfg)


def _extra_file_name(name: str) -> str:
    file_name = name if name.endswith(".json") else f"{name}.json"
    if os.sep in file_name or "/" in file_name or file_name in (META_FILE,) or file_name.startswith("."):
        raise ValueError(f"extra checkpoint file name {name!r} is not allowed")
    return file_name


def _plain_file_name(name: str) -> str:
    if os.sep in name or "/" in name or name.startswith(".") or name in (WEIGHTS_FILE, CONFIG_FILE, META_FILE):
        raise ValueError(f"checkpoint file name {name!r} is not allowed")
    return name


def save_model_dir(directory: str | Path, model: TextConditionedSegmenter, cfg: Any, *,
                   extra: Optional[Mapping[str, Any]] = None, text_files: Optional[Mapping[str, str]] = None,
                   state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> Path:
    """Write ``directory`` (model.safetensors, config.yaml, model_meta.json, extra files) atomically.

    ``state_dict``: the full weights when ``model`` alone cannot give them (FSDP shards them across processes:
    the caller gathers them with ``accelerator.get_state_dict`` on every rank); default ``model.state_dict()``.

    ``extra`` maps file names to JSON-able objects, e.g. ``{"thresholds.json": {...}}``; ``text_files`` maps
    file names to text written as is (the class catalogue and caption templates a model was trained with).
    An existing model directory is replaced as a whole.
    """
    directory = Path(directory)
    cfg_dict = _config_mapping(cfg)
    saved_cfg = as_model_config(cfg_dict["model"])
    if saved_cfg.conditioning != model.conditioning or saved_cfg.encoder != model.encoder.name:
        raise ValueError(f"config model section ({saved_cfg.encoder}, conditioning={saved_cfg.conditioning}) "
                         f"does not describe the model ({model.encoder.name}, conditioning={model.conditioning})")
    extra_files = {_extra_file_name(k): v for k, v in (extra or {}).items()}
    plain_files = {_plain_file_name(k): v for k, v in (text_files or {}).items()}
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    except OSError as err:
        _raise_write_failure(err, directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
        weights = model.state_dict() if state_dict is None else state_dict
        state = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic_write_text(tmp / CONFIG_FILE, yaml.safe_dump(cfg_dict, sort_keys=False))
        atomic_write_json(tmp / META_FILE, model_meta(model))
        for file_name, obj in extra_files.items():
            atomic_write_json(tmp / file_name, obj)
        for file_name, text in plain_files.items():
            atomic_write_text(tmp / file_name, text)
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception):  # OSError, safetensors' SafetensorError: disk full / read-only named
            _raise_write_failure(err, directory)
        raise
    return directory


def load_model(directory: str | Path, map_location: str | torch.device = "cpu"
               ) -> Tuple[TextConditionedSegmenter, Dict[str, Any]]:
    """Rebuild the model of a model directory (in eval mode) and return it with the run config."""
    directory = Path(directory)
    files = {"weights": directory / WEIGHTS_FILE, "config": directory / CONFIG_FILE, "meta": directory / META_FILE}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no {path.name} (a model directory holds {WEIGHTS_FILE}, "
                                    f"{CONFIG_FILE} and {META_FILE}, written by save_model_dir)")
    cfg = read_model_file(files["config"], yaml.safe_load, "the YAML")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ModelDirError(f"{files['config']}: expected the run config mapping with a 'model' section")
    meta = read_model_file(files["meta"], json.loads, "the JSON")
    lacking = [k for k in ("num_classes", "text_dim", "image_size", "in_chans")
               if not isinstance(meta, dict) or k not in meta]
    if lacking:
        raise ModelDirError(f"{files['meta']}: the checkpoint is damaged: no {lacking} in it")
    if meta.get("format_version") != META_VERSION:
        raise ValueError(f"{files['meta']}: format_version {meta.get('format_version')!r}, expected {META_VERSION}")
    # The checkpoint carries the encoder weights: never download / read the original ones again.
    model_cfg = dataclasses.replace(as_model_config(cfg["model"]), encoder_weights=None)
    model = build_model(model_cfg, num_classes=meta["num_classes"], text_dim=meta["text_dim"],
                        image_size=meta["image_size"], in_chans=meta["in_chans"])
    try:
        state = load_file(str(files["weights"]), device="cpu")
    except Exception as err:  # noqa: BLE001 - SafetensorError (a bare Exception subclass), OSError
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelDirError(f"{files['weights']}: the checkpoint is damaged (truncated or corrupt: {detail}); "
                              "re-export it or use another checkpoint") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise RuntimeError(f"{files['weights']}: does not match the model of {CONFIG_FILE}: missing {missing[:6]}, "
                           f"unexpected {unexpected[:6]}, shape mismatches {mismatched[:4]}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), cfg


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
