"""What do the connected-component rules cost at prediction? One run, JSON on stdout.

The 29 ground-truth masks of synthetic test images, rendered at --sizes, each class given two stray copies of a
fingertip-sized blob (so every rule has components to choose from), go through ``postprocess.PostProcessed`` with
every class on one rule (none, largest, min_area:0.0005, attached with the catalogue's attached_to, exclusive with the
claims of the masks themselves, their computation included) and then through RLE encoding, which prediction does
anyway:
  ms_per_image[rule]        median over --reps of rule + RLE for the 29 masks of one image
  ratio_to_none[rule]       that time over "none" (RLE only): the post-processing share of writing a submission

    .venv/bin/python benchmarks/postprocess.py [--root data/synthetic] [--sizes 512 2048] [--images 4] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RULES = ("none", "largest", "min_area:0.0005", "attached", "exclusive")


def _masks(root: Path, size: int, images: int, names) -> list[np.ndarray]:
    from mmseg_text.data.annotations import load_annotation
    from mmseg_text.data.images import read_image_size
    from mmseg_text.data.masks import polygons_to_masks
    from mmseg_text.evaluation.scoring import find_ground_truth

    out = []
    rng = np.random.default_rng(0)
    for gt in find_ground_truth(root / "test" / "outputs_json", root / "test" / "DCM")[:images]:
        src = read_image_size(gt.image_path)
        masks = polygons_to_masks(load_annotation(gt.json_path, known_labels=names), names, out_size=(size, size),
                                  src_size=src)
        side = max(2, size // 40)
        for k in range(len(masks)):  # two strays per class, away from the hand's centre
            for _ in range(2):
                y, x = rng.integers(0, size - side, 2)
                masks[k, y:y + side, x:x + side] = True
        out.append(masks)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)

    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.postprocess import Claims, PostProcessed
    from mmseg_text.rle import rle_encode

    catalogue = load_catalogue()
    result = {"images": args.images, "rules": list(RULES), "sizes": {}}
    for size in args.sizes:
        images = _masks(Path(args.root), size, args.images, list(catalogue.names))
        times = {rule: [] for rule in RULES}
        for _ in range(args.reps):
            for rule in RULES:  # interleaved, so load hits every rule alike
                start = time.perf_counter()
                for masks in images:
                    claims = Claims.of(masks) if rule == "exclusive" else None
                    processed = PostProcessed(masks, [rule] * len(masks), catalogue.attached_to, claims)
                    for k in range(len(masks)):
                        rle_encode(processed[k])
                times[rule].append((time.perf_counter() - start) / len(images))
        ms = {rule: round(float(np.median(t)) * 1000, 1) for rule, t in times.items()}
        result["sizes"][str(size)] = {"ms_per_image": ms,
                                      "ratio_to_none": {r: round(ms[r] / ms["none"], 2) for r in RULES}}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
