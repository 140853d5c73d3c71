"""Image models: timm encoder -> UNet decoder with gated text conditioning -> conv / text-query head."""
from .build import (CONFIG_FILE, META_FILE, WEIGHTS_FILE, as_model_config, build_model, count_parameters, load_model,
                    save_model_dir)
from .conditioning import FiLM, GatedCrossAttention, TextContext, iter_gates, text_parameters
from .decoder import UNetDecoder
from .registry import CONDITIONINGS, HEADS, NORMS, lookup
from .encoders import EncoderWeightsError, TimmEncoder
from .heads import ConvHead, TextQueryHead
from .segmenter import TextConditionedSegmenter

__all__ = [
    "CONDITIONINGS", "CONFIG_FILE", "lookup", "ConvHead", "EncoderWeightsError", "FiLM", "GatedCrossAttention", "HEADS",
    "META_FILE", "NORMS", "TextConditionedSegmenter", "TextContext", "TextQueryHead", "TimmEncoder", "UNetDecoder",
    "WEIGHTS_FILE", "as_model_config", "build_model", "count_parameters", "iter_gates", "load_model",
    "save_model_dir", "text_parameters",
]
