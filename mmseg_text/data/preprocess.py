"""The one preprocessing path from a decoded image to the model's input tensor.

Training (the cache and the dataset) and prediction both go through a :class:`Preprocessor`, so the network
sees the same pixels at both: resize to the working size (INTER_AREA), optional CLAHE, then scale to [0, 1],
repeat the grey value into ``in_chans`` channels and normalise with the encoder's own mean/std (timm's
``resolve_data_config``). The preprocessor is stored with every exported model (``preprocessing.json``).

The working size is the whole image's resolution. A model trained on crops (``window``, the crop size) sees
windows of that size: validation and prediction tile the working-size image into such windows.

``coord_channels`` (``model.coord_channels``, CoordConv): two more input channels, the y and x of each pixel in the
whole image, in [-1, 1] at pixel centres. A training crop gets its window of them (``to_tensor(origin=...)``);
prediction appends them to the whole image before tiling, so a window's slice is the coordinates of the same
pixels: a crop knows which finger it shows. A horizontal mirror of the input keeps them canonical
(``mirror_images``: the x channel is negated after the flip).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import cv2
import numpy as np
import torch

from mmseg_text.choices import COORD_CHANNELS
from mmseg_text.data.images import resize_to_model

CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


def apply_clahe(image: np.ndarray, fraction: float = 1.0) -> np.ndarray:
    """CLAHE with an 8x8 tile grid over the whole image; a crop that covers ``fraction`` of the image's side
    gets proportionally fewer tiles, so its tiles span as many pixels as the whole image's do."""
    tiles = tuple(max(1, round(t * fraction)) for t in CLAHE_TILES)
    return cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=tiles).apply(image)


@dataclass(frozen=True)
class Preprocessor:
    image_size: int  # square working resolution of the whole image
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    clahe: bool = False
    window: Optional[int] = None  # the model's input when it was trained on crops of this size; None = image_size
    coord_channels: bool = False  # + y, x of each pixel in the whole image (model.coord_channels)

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean {self.mean} and std {self.std} must have one value per input channel")

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    @property
    def input_channels(self) -> int:
        """What the model reads: the image channels, and the two coordinate channels when asked."""
        return self.in_chans + (COORD_CHANNELS if self.coord_channels else 0)

    @property
    def input_size(self) -> int:
        """The square the model sees at once: the crop / window size, else the whole working-size image."""
        return self.window or self.image_size

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H0, W0) -> uint8 (S, S); what the training cache stores."""
        return resize_to_model(image, self.image_size)

    def enhance(self, image: np.ndarray, fraction: float = 1.0) -> np.ndarray:
        """Contrast enhancement on the resized uint8 image (before augmentation); ``fraction``: the share of the
        whole image's side that ``image`` covers (a training crop)."""
        return apply_clahe(image, fraction) if self.clahe else image

    def to_tensor(self, image: np.ndarray, origin: tuple[int, int] = (0, 0),
                  whole: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """uint8 grayscale (H, W) -> normalised float32 (input_channels, H, W).

        With ``coord_channels``: ``image`` is the window at ``origin`` (top, left) of a whole image of size
        ``whole`` (default: ``image`` is the whole image). Computed in NumPy: small torch ops in a busy process
        pay OpenMP thread start-up (~10 ms each).
        """
        gray = np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)
        out = np.empty((self.input_channels,) + gray.shape, dtype=np.float32)
        for c, (mean, std) in enumerate(zip(self.mean, self.std)):
            np.multiply(gray, np.float32(1.0 / std), out=out[c])
            out[c] -= np.float32(mean / std)
        if self.coord_channels:
            out[self.in_chans:] = coordinates(gray.shape, origin, whole or gray.shape)
        return torch.from_numpy(out)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """A decoded image at its original size -> the model input, exactly as in training."""
        return self.to_tensor(self.enhance(self.resize(image)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Preprocessor":
        return cls(image_size=int(doc["image_size"]), mean=tuple(map(float, doc["mean"])),
                   std=tuple(map(float, doc["std"])), clahe=bool(doc.get("clahe", False)),
                   window=int(doc["window"]) if doc.get("window") else None,
                   coord_channels=bool(doc.get("coord_channels", False)))



def coordinates(shape: tuple[int, int], origin: tuple[int, int], whole: tuple[int, int]) -> np.ndarray:
    """float32 (2, h, w): y and x in [-1, 1] of the pixel centres of the ``shape`` window at ``origin`` of a
    ``whole``-sized image (2 (i + 0.5) / size - 1)."""
    (h, w), (top, left), (height, width) = shape, origin, whole
    ys = (2 * (np.arange(top, top + h, dtype=np.float32) + 0.5) / height - 1).astype(np.float32)
    xs = (2 * (np.arange(left, left + w, dtype=np.float32) + 0.5) / width - 1).astype(np.float32)
    return np.stack(np.broadcast_arrays(ys[:, None], xs[None, :]))


def mirror_images(images: torch.Tensor, coord_channels: bool = False) -> torch.Tensor:
    """(..., C, H, W) flipped left-right; with coordinate channels (the last two) the x channel is negated, so it
    holds the flipped image's own x (a flipped ramp 2 (W - 1 - j + 0.5) / W - 1 is minus the ramp)."""
    out = images.flip(-1)
    if coord_channels:
        out[..., -1, :, :].neg_()
    return out

