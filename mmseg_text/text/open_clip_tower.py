"""open_clip text tower (``text.model`` + ``text.pretrained``): the text half of a CLIP model.

The full model is built (the checkpoints hold both towers and load strictly), then only the text
modules are kept and the visual tower is dropped. Tokens are the transformer outputs after
``ln_final``, **projected** by ``text_projection`` -- the same map that turns the EOT token into the
model's ``encode_text`` output -- so tokens and the pooled embedding share one space of size
``tower.width`` (= the CLIP ``embed_dim``). ``pooled`` equals ``model.encode_text(ids)``.

``text.pretrained=null`` is the explicit random initialisation, seeded so that its
:attr:`TextTower.identity` (the embedding-cache key) names a reproducible set of weights.
"""
from __future__ import annotations

import difflib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from mmseg_text.assets import OPEN_CLIP_CONFIG_DIR
from mmseg_text.text.tower import (
    FEATURES_VERSION,
    FIX_HINT,
    TextFeatures,
    TextTower,
    TextWeightsError,
    _file_stamp,
    _short_hash,
)

RANDOM_INIT_SEED = 0  # text.pretrained=null builds the same random weights in every process


_registered_dirs: set[str] = set()


def register_open_clip_configs(directory: str | Path = OPEN_CLIP_CONFIG_DIR) -> list[str]:
    """Register the repo's model configs (``mmseg_text/assets/open_clip/*.json``) with open_clip; idempotent.

    Called by :func:`build_text_tower` itself, so a model name never depends on import order.
    Returns the names found in ``directory``.
    """
    import open_clip

    directory = Path(directory).resolve()
    if str(directory) not in _registered_dirs and directory.is_dir():
        open_clip.add_model_config(directory)
        _registered_dirs.add(str(directory))
    return sorted(p.stem for p in directory.glob("*.json"))



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
