"""Inference: exported model directories, tiling, the predictor. Never imports mmseg_text.training."""
