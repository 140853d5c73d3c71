"""Row-streamed windows hold one batch of window outputs at a time: a batch's crops and outputs are gone before
the next forward runs (else K x window² floats a window sit beside the forward's own activations), and the
masks are still those of MONAI's full map."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from mmseg_text.inference.tiling import (StitchedRows, View, WindowOptions, blended_rows, masks_from_rows,
                                         model_probabilities, window_forward)
from tests.inference.test_tiling import Local


class Recording:
    """``forward`` that checks, at every call, that no earlier call's input or output is still alive."""

    def __init__(self, forward):
        self.forward, self.held, self.calls = forward, [], 0

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        alive = [ref for ref in self.held if ref() is not None]
        assert not alive, f"call {self.calls}: {len(alive)} tensors of an earlier batch still held"
        out = self.forward(crops)
        self.held = [weakref.ref(crops), weakref.ref(out)]
        self.calls += 1
        return out


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("mirrored", [False, True])
def test_no_earlier_batch_is_held_through_a_forward_and_the_masks_are_monais(batch, mirrored):
    model = Local(k=5).eval()
    image = torch.randn(1, 3, 160, 224)  # 4 x 6 windows of 64: several batches a window row
    options = WindowOptions(overlap=0.5, batch_size=batch, stitch_half=False)
    forward = Recording(window_forward(model, None))
    source = blended_rows([(64, [View(forward, image, mirrored=mirrored)])], (160, 224), options)
    assert isinstance(source, StitchedRows)
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    masks = masks_from_rows(source, thresholds, packed=True)
    assert forward.calls == 4 * -(-6 // batch)  # every window once
    with torch.no_grad():
        seen = image.flip(-1) if mirrored else image
        probs = model_probabilities(model, seen, None, window=64, options=options)[0]
        probs = probs.flip(-1) if mirrored else probs
    expected = (probs > torch.tensor(thresholds).view(-1, 1, 1)).numpy()
    assert expected.any() and not expected.all()  # thresholds that cut: the comparison means something
    np.testing.assert_array_equal(np.asarray(masks), expected)


def test_unset_window_batch_is_one_window_on_the_cpu_and_four_on_a_gpu():
    from mmseg_text.config import PredictConfig
    from mmseg_text.inference.tiling import CPU_WINDOW_BATCH, GPU_WINDOW_BATCH

    unset = WindowOptions.from_config(PredictConfig())
    assert PredictConfig().window_batch_size is None
    assert (unset.windows_per_forward("cpu"), unset.windows_per_forward("cuda")) == (CPU_WINDOW_BATCH, GPU_WINDOW_BATCH) == (1, 4)
    assert WindowOptions(batch_size=3).windows_per_forward("cpu") == 3  # a set value wins on any device
