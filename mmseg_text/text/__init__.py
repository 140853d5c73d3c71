"""Text side of mmseg-text: captions, text towers and the caption embedding cache.

    builder = CaptionBuilder(cfg.text.templates, catalogue, mode=cfg.text.mode,
                             bucket_numbers=cfg.text.bucket_numbers, shuffle=cfg.text.shuffle, seed=cfg.train.seed)
    tower = build_text_tower(cfg.text)               # frozen TextTower; tower.identity, tower.width
    cache = TextEmbeddingCache(tower, cfg.text.cache_dir, batch_size=cfg.text.batch_size)
    cache.warm(builder.class_captions() + image_captions)
    feats = cache.lookup(batch["caption"]).to(device)  # TextFeatures(tokens, mask, pooled)
"""
from mmseg_text.text.cache import CACHE_FORMAT, TextEmbeddingCache, identity_dirname
from mmseg_text.text.captions import CaptionBuilder, CaptionFn, is_missing, normalise_side
from mmseg_text.text.templates import CaptionTemplateError, CaptionTemplates, load_templates
from mmseg_text.text.encoder import (
    FIX_HINT,
    OPEN_CLIP_CONFIG_DIR,
    HFTextTower,
    OpenClipTextTower,
    TextFeatures,
    TextTower,
    TextWeightsError,
    build_hf_tower,
    build_open_clip_tower,
    build_text_tower,
    register_open_clip_configs,
    resolve_hf_path,
)

__all__ = [
    "CACHE_FORMAT", "FIX_HINT", "OPEN_CLIP_CONFIG_DIR",
    "CaptionBuilder", "CaptionFn", "CaptionTemplateError", "CaptionTemplates",
    "HFTextTower", "OpenClipTextTower", "TextEmbeddingCache", "TextFeatures", "TextTower", "TextWeightsError",
    "build_hf_tower", "build_open_clip_tower", "build_text_tower", "identity_dirname", "is_missing",
    "load_templates", "normalise_side", "register_open_clip_configs", "resolve_hf_path",
]
