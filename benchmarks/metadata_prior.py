"""What can metadata alone segment? The ceiling of the metadata study's "whole hand fades" control at L = 1.

When the image holds no anatomy, a network can at best paint a mask that depends on the metadata. This script
scores the simplest such predictors on the held-out test split: per class the mean training mask, thresholded
at the level that maximises training Dice, from all training images ("no metadata") or only from those of the
same hand side ("side"), the fact that moves a mask the most. Mean Dice over test images and classes, as the
metric does. JSON on stdout.

    .venv/bin/python benchmarks/metadata_prior.py --root data/synthetic --size 128
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.masks import polygons_to_masks
from mmseg_text.data.synthetic import CARD_FILE
from mmseg_text.metrics import dice_per_image

THRESHOLDS = np.linspace(0.05, 0.95, 19)


def load_masks(root: Path, split: str, names, size: int, source: int) -> list[tuple[str, np.ndarray]]:
    """(image id, (K, size, size) bool masks) for every annotation JSON of ``split`` (images ``source`` px)."""
    return [(path.stem, polygons_to_masks(load_annotation(path, known_labels=names), names, (size, size),
                                          (source, source)))
            for path in sorted((root / split / "outputs_json").glob("*/*.json"))]


def dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-class competition Dice of one image's (K, H, W) bool maps (metrics.dice_per_image)."""
    return dice_per_image(pred[None], truth[None])[0].numpy()


def fit_prior(masks: list[np.ndarray]) -> np.ndarray:
    """Per class the mean mask thresholded where training Dice is highest: (K, H, W) bool."""
    mean = np.mean([m.astype(np.float32) for m in masks], 0)
    best = []
    for k in range(mean.shape[0]):
        scores = [np.mean([dice(mean[k:k + 1] >= t, m[k:k + 1])[0] for m in masks]) for t in THRESHOLDS]
        best.append(THRESHOLDS[int(np.argmax(scores))])
    return mean >= np.asarray(best)[:, None, None]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/synthetic", help="a synthetic set (synthetic_truth.csv gives the sides)")
    p.add_argument("--size", type=int, default=128, help="mask side to score at (the study trains at 128)")
    args = p.parse_args(argv)
    root, names = Path(args.root), load_catalogue().names
    side = pd.read_csv(root / "synthetic_truth.csv").set_index("image_id")["side"].to_dict()
    source = json.loads((root / CARD_FILE).read_text(encoding="utf-8"))["size"]  # the JSON's metadata says 3060
    train, test = (load_masks(root, split, names, args.size, source) for split in ("train", "test"))
    no_meta = fit_prior([m for _, m in train])
    by_side = {s: fit_prior([m for i, m in train if side[i] == s]) for s in ("left", "right")}
    result = {"root": str(root), "size": args.size, "train_images": len(train), "test_images": len(test),
              "test_mean_dice": {"prior_no_metadata": float(np.mean([dice(no_meta, m).mean() for _, m in test])),
                                 "prior_by_side": float(np.mean([dice(by_side[side[i]], m).mean() for i, m in test]))}}
    result["side_minus_no_metadata"] = (result["test_mean_dice"]["prior_by_side"]
                                        - result["test_mean_dice"]["prior_no_metadata"])
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
