"""Colour overlays of multi-label masks on a radiograph (one colour per class, outlines on top)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmseg_text.io import atomic_path

MAX_SIDE = 1024  # overlays are for looking at, not for measuring: keep files small


def class_colours(num_classes: int) -> np.ndarray:
    """Distinct RGB colours (uint8, (K, 3)) from evenly spaced hues, alternating brightness."""
    hues = (np.arange(num_classes) * 180 / num_classes).astype(np.uint8)
    values = np.where(np.arange(num_classes) % 2 == 0, 255, 190).astype(np.uint8)
    hsv = np.stack([hues, np.full(num_classes, 200, np.uint8), values], axis=1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def render_overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 overlay of bool masks (K, H, W) on a grayscale uint8 image (H, W), downscaled to MAX_SIDE."""
    h, w = image.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    colours = class_colours(len(masks)).astype(np.float32)
    for k, mask in enumerate(masks):
        m = mask.astype(np.uint8)
        if scale < 1:
            m = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST)
        if not m.any():
            continue
        sel = m.astype(bool)
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * colours[k]
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, colours[k].tolist(), 1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, masks: np.ndarray) -> Path:
    path = Path(path)
    overlay = render_overlay(image, masks)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"could not encode overlay {path}")
        tmp.write_bytes(buf.tobytes())
    return path
