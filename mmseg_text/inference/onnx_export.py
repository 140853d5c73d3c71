"""ONNX export of an exported model directory: the image network, with the caption read from cached embeddings.

The text tower is not part of the graph: a frozen tower's caption features are what the model reads, so they are
inputs (``caption_tokens`` (B, L, D), ``caption_mask`` (B, L) bool, ``caption_pooled`` (B, D); the exporter keeps
those the conditioning reads: tokens and mask for cross-attention, pooled for FiLM) for models that read a caption
per image, and everything that does not depend on the image (the bone-name embeddings of
``text.mode=classes`` / ``meta+classes``, a ``text_query`` head's queries) is baked into the graph as constants. A
text-off model takes the image only. Beside ``model.onnx``, ``model.captions.npz`` holds the features of the
no-metadata caption (every fact unknown, side included: the caption of caption dropout, ``text.drop_p``) so the
graph runs with no tower at all.

``verify_onnx`` runs the graph with onnxruntime on CPU against the PyTorch model on the same input and reports the
largest logit difference and both forward times.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from mmseg_text.data.images import resize_to_model
from mmseg_text.inference.model_dir import ExportedModel, load_exported
from mmseg_text.io import atomic_path
from mmseg_text.models.conditioning import TextContext
from mmseg_text.text.caption_encoder import build_caption_encoder

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
CAPTION_INPUTS = ("caption_tokens", "caption_mask", "caption_pooled")
IMAGE_INPUT = "image"
OUTPUT = "logits"


def captions_path(onnx_path: str | Path) -> Path:
    """``model.captions.npz`` beside ``model.onnx``: the no-metadata caption's features."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.captions.npz")


class OnnxGraph(nn.Module):
    """The model as the graph sees it: ``forward(image[, caption_tokens, caption_mask, caption_pooled])``, with
    the constant part of the text context (bone-name tokens) held as buffers."""

    def __init__(self, exported: ExportedModel):
        super().__init__()
        self.model = exported.model.eval()
        text = build_caption_encoder(exported.cfg, exported.catalogue, progress=False)
        self.text = text  # not a module: the tower stays out of the graph
        self.has_text = text is not None and self.model.has_text_modules
        self.reads_caption = self.has_text and text.mode.uses_meta
        classes = text.class_embeddings if self.has_text else None
        self.register_buffer("class_tokens", None if classes is None else classes.float().clone())
        if not self.has_text:
            return
        if not self.reads_caption:  # the context is the same for every image: bake it whole
            fixed = text.context(None, 1)
            self.register_buffer("fixed_tokens", fixed.tokens.float().clone())
            self.register_buffer("fixed_pooled", fixed.pooled.float().clone())

    @property
    def input_names(self) -> list[str]:
        return [IMAGE_INPUT] + (list(CAPTION_INPUTS) if self.reads_caption else [])

    def forward(self, image: Tensor, caption_tokens: Optional[Tensor] = None, caption_mask: Optional[Tensor] = None,
                caption_pooled: Optional[Tensor] = None) -> Tensor:
        caption = (caption_tokens, caption_mask, caption_pooled)
        return self.model(image, self._context(image.shape[0], caption))

    def _context(self, batch: int, caption: tuple[Optional[Tensor], ...]) -> Optional[TextContext]:
        if not self.has_text:
            return None
        if not self.reads_caption:
            tokens = self.fixed_tokens.expand(batch, -1, -1)
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            return TextContext(tokens, mask, self.fixed_pooled.expand(batch, -1), self.class_tokens)
        tokens, mask, pooled = caption
        if self.class_tokens is not None:
            k, d = self.class_tokens.shape
            tokens = torch.cat([tokens, self.class_tokens.unsqueeze(0).expand(batch, k, d)], dim=1)
            mask = torch.cat([mask, torch.ones(batch, k, dtype=torch.bool, device=mask.device)], dim=1)
        return TextContext(tokens, mask, pooled, self.class_tokens)


def caption_features(exported: ExportedModel, captions: Optional[list[str]] = None, *,
                     text=None) -> dict[str, np.ndarray]:
    """The graph's caption inputs for ``captions`` (default: the no-metadata caption), as float32 / bool arrays;
    empty for a model that reads no caption per image. ``text``: its caption encoder, when already built."""
    text = text or build_caption_encoder(exported.cfg, exported.catalogue, progress=False)
    if text is None or not text.mode.uses_meta:
        return {}
    captions = captions or [text.caption("unknown", {})]
    feats = text.caption_features(captions)  # numbers source: fact dicts and their number tokens
    return {"caption_tokens": feats.tokens.float().numpy(), "caption_mask": feats.mask.numpy().astype(bool),
            "caption_pooled": feats.pooled.float().numpy()}


@dataclass
class OnnxReport:
    onnx: str
    inputs: list[str]
    input_shape: list[int]
    max_abs_logit_diff: float
    tolerance: float
    torch_ms: float
    onnxruntime_ms: float

    @property
    def ok(self) -> bool:
        return self.max_abs_logit_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok, "speedup_onnxruntime_vs_torch": self.torch_ms / self.onnxruntime_ms}


def _loaded(model: str | Path | ExportedModel) -> ExportedModel:
    return model if isinstance(model, ExportedModel) else load_exported(model)


def export_onnx(model_dir: str | Path | ExportedModel, onnx_path: str | Path, *,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write ``onnx_path`` (and the no-metadata caption's features beside it, for caption-reading models)
    atomically. Batch, height and width are dynamic (height and width multiples of the encoder's stride)."""
    exported = _loaded(model_dir)
    graph = OnnxGraph(exported).eval()
    example = example_inputs(exported, graph)
    dynamic = {IMAGE_INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "height", 3: "width"}}
    if graph.reads_caption:
        dynamic.update({"caption_tokens": {0: "batch", 1: "tokens"}, "caption_mask": {0: "batch", 1: "tokens"},
                        "caption_pooled": {0: "batch"}})
    onnx_path = Path(onnx_path)
    with atomic_path(onnx_path) as tmp, warnings.catch_warnings():
        # shape checks of Python code are constants in a trace: harmless here (the sizes are checked when exported)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")  # see below
        # The TorchScript exporter: dynamic axes without shape guards, seconds per model. torch.export's (dynamo=True)
        # gave the same logits on the tiny test model but ran over 10 minutes on the demo's EfficientNet here.
        torch.onnx.export(graph, tuple(torch.from_numpy(v) for v in example.values()), str(tmp),
                          input_names=graph.input_names, output_names=[OUTPUT], dynamic_axes=dynamic,
                          opset_version=opset, dynamo=False)
    if graph.reads_caption:
        with atomic_path(captions_path(onnx_path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **caption_features(exported, text=graph.text))
    logger.info("wrote %s (inputs %s)", onnx_path, graph.input_names)
    return onnx_path


def example_inputs(exported: ExportedModel, graph: OnnxGraph, image: Optional[np.ndarray] = None,
                   batch: int = 1, size: Optional[int] = None) -> dict[str, np.ndarray]:
    """The graph's inputs for ``image`` (a decoded grayscale image, resized to ``size`` (default: the model's
    input size) and preprocessed as in prediction; default: a seeded random image), with the no-metadata caption."""
    pre = exported.preprocess
    size = size or pre.input_size
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    pixels = pre.to_tensor(pre.enhance(resize_to_model(image, size))).numpy()
    inputs = {IMAGE_INPUT: np.repeat(pixels[None], batch, axis=0)}
    for name, value in caption_features(exported, text=graph.text).items() if graph.reads_caption else ():
        inputs[name] = np.repeat(value, batch, axis=0)
    return inputs


def _alternating_median_ms(first, second, repeats: int) -> tuple[float, float]:
    """Median milliseconds of two calls timed in turn (after one warm-up each), so that load hits both alike."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return float(np.median(times[0]) * 1000.0), float(np.median(times[1]) * 1000.0)


def verify_onnx(model_dir: str | Path | ExportedModel, onnx_path: str | Path, *, image: Optional[np.ndarray] = None,
                size: Optional[int] = None, tolerance: float = 1e-4, repeats: int = 5,
                threads: Optional[int] = None) -> OnnxReport:
    """The largest |logit| difference between onnxruntime (CPU) and PyTorch on one input (``image`` at ``size``,
    see ``example_inputs``), and the median time of each forward (``threads``: intra-op threads of both; default:
    the runtime's own)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("checking an ONNX export needs onnxruntime: pip install 'mmseg-text[onnx]'") from exc
    exported = _loaded(model_dir)
    graph = OnnxGraph(exported).eval()
    inputs = example_inputs(exported, graph, image, size=size)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    tensors = tuple(torch.from_numpy(v) for v in inputs.values())
    if exported.cfg.train.channels_last:  # PyTorch timed as prediction runs it (NHWC: ~1.4x faster convolutions on CPU)
        graph.model.to(memory_format=torch.channels_last)
        tensors = (tensors[0].contiguous(memory_format=torch.channels_last),) + tensors[1:]
    wanted = [i.name for i in session.get_inputs()]  # the exporter drops inputs the graph never reads
    if not set(wanted) <= set(inputs):
        raise ValueError(f"{onnx_path}: inputs {wanted}, the model directory {exported.directory} gives "
                         f"{list(inputs)}; export it again from this model")
    inputs = {name: inputs[name] for name in wanted}
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            reference = graph(*tensors).numpy()
            got = session.run([OUTPUT], inputs)[0]
            torch_ms, ort_ms = _alternating_median_ms(lambda: graph(*tensors), lambda: session.run([OUTPUT], inputs),
                                                      repeats)
    finally:
        torch.set_num_threads(previous)
    if got.shape != reference.shape:
        raise ValueError(f"{onnx_path}: output {got.shape}, PyTorch gives {reference.shape}")
    return OnnxReport(onnx=str(onnx_path), inputs=list(inputs), input_shape=list(inputs[IMAGE_INPUT].shape),
                      max_abs_logit_diff=float(np.abs(got - reference).max()), tolerance=tolerance,
                      torch_ms=torch_ms, onnxruntime_ms=ort_ms)
