"""One model's probability maps for a batch of images at the inference resolution: a plain forward when the
image is the model's size, else MONAI's ``sliding_window_inference`` with windows of the training size
(Gaussian blending by default), optionally at several scales. The caption context of an image is shared by
all of its windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mmseg_text.choices import lookup
from mmseg_text.models.conditioning import TextContext

# predict.window_mode -> MONAI's blend mode name; the names are choices.WINDOW_MODES.
WINDOW_MODE_REGISTRY = {"gaussian": "gaussian", "constant": "constant"}


@dataclass(frozen=True)
class WindowOptions:
    overlap: float = 0.5  # fraction of a window shared with its neighbour
    mode: str = "gaussian"  # blending of overlapping windows: gaussian | constant
    batch_size: int = 4  # windows per forward pass
    stitch_on_cpu: bool = False  # keep the full-resolution output on the CPU (GPU memory is short)
    stitch_half: bool = True  # windows and blend maps in float16: halves the full-resolution buffers (error ~1e-3)

    @classmethod
    def from_config(cls, predict_cfg, overlap: Optional[float] = None) -> "WindowOptions":
        """The ``predict.window_*`` settings (validation tiles exactly as prediction does)."""
        return cls(overlap=predict_cfg.window_overlap if overlap is None else overlap, mode=predict_cfg.window_mode,
                   batch_size=predict_cfg.window_batch_size, stitch_on_cpu=predict_cfg.stitch_on_cpu,
                   stitch_half=predict_cfg.stitch_half)


def model_probabilities(model: torch.nn.Module, images: torch.Tensor, context: Optional[TextContext], *,
                        window: int, options: WindowOptions = WindowOptions(),
                        memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(B, C, H, W) images -> (B, K, H, W) probabilities. ``window`` is the model's training size: images of
    that size take one forward; larger ones are tiled into windows of it."""
    def forward(x: torch.Tensor, ctx: Optional[TextContext]) -> torch.Tensor:
        return model(x.contiguous(memory_format=memory_format), ctx).float().sigmoid()

    if tuple(images.shape[-2:]) == (window, window):
        return forward(images, context)
    blend = lookup(WINDOW_MODE_REGISTRY, "predict.window_mode", options.mode)
    from monai.inferers import sliding_window_inference  # ~10 s to import: only when windows are needed

    # MONAI keeps its output, count and blend maps in the input's dtype: a float16 input halves them.
    stitch_dtype = torch.float16 if options.stitch_half else images.dtype
    outputs = []
    for b in range(images.shape[0]):  # one image at a time: every window of it reads its own caption
        ctx = None if context is None else _one(context, b)
        outputs.append(sliding_window_inference(
            images[b:b + 1].to(stitch_dtype), roi_size=(window, window), sw_batch_size=options.batch_size,
            predictor=lambda w, ctx=ctx: forward(w.to(images.dtype), ctx).to(stitch_dtype), overlap=options.overlap,
            mode=blend, sw_device=images.device,
            device=torch.device("cpu") if options.stitch_on_cpu else images.device))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # no copy of a lone full-resolution map
    return out.to(device=images.device, dtype=images.dtype)


def multiscale(probabilities: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               scales: Sequence[float]) -> torch.Tensor:
    """Mean over ``scales`` of ``probabilities(images resized by s)``, each resized back (bilinear)."""
    size = tuple(images.shape[-2:])
    total = None
    for s in scales:
        scaled = images if s == 1.0 else F.interpolate(images, scale_factor=float(s), mode="bilinear",
                                                       align_corners=False, recompute_scale_factor=False)
        probs = probabilities(scaled)
        if tuple(probs.shape[-2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    return total / len(scales)


def _one(context: TextContext, b: int) -> TextContext:
    """Image ``b``'s context as a batch of one (the model expands it to the windows)."""
    if context.batch_size == 1:
        return context
    return TextContext(context.tokens[b:b + 1], context.mask[b:b + 1], context.pooled[b:b + 1],
                       context.class_embeddings)
