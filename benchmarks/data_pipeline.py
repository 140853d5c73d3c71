"""How much does the preprocessing cache buy? One CPU run, JSON on stdout.

Makes (or reuses) a small synthetic set with 2048 px sources, then measures samples/s at --size (512):
  naive_baseline   the competition baseline's loader: cv2.imread (3-channel) -> float /255, 29 polygons
                   filled at 2048² into an (H, W, 29) label, image and label resized to 512
  naive_lean       a leaner uncached loader: grayscale decode, polygons filled at 2048² into (29, H, W)
                   uint8, INTER_AREA resize of image and masks
  cached           mmseg_text.data.cache: load one .npy (uint8 image + packed masks) and unpack
  dataset_cached   SegmentationDataset.__getitem__ from the cache (Preprocessor: tensors with the default
                   encoder's normalisation; no augmentation)
plus the cache build time (--workers processes) and its size on disk per image. With ``--crop C`` every path
delivers a C² training crop of the --size image (the high-resolution recipe: ``data.cache_size`` + ``data.crop_size``):
the naive loaders build the whole --size sample and slice it; the cache reads the crop's rows of a memory-mapped
entry, placed on a foreground pixel (data/crops.py). Timed passes are
interleaved (naive, cached, naive, ...) so that load from other processes hits both alike; all files
are read once first so every path runs from the page cache.

    .venv/bin/python benchmarks/data_pipeline.py [--root DIR] [--n 16] [--size 512] [--workers 2] [--crop 256]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Sequence

import cv2
import numpy as np

from mmseg_text.catalogue import load_catalogue
from mmseg_text.config import Config, DataConfig
from mmseg_text.data.cache import build_cache, load_cached, load_window
from mmseg_text.data.crops import pick_origin
from mmseg_text.data.dataset import SegmentationDataset
from mmseg_text.data.index import ImageFacts
from mmseg_text.data.layout import ImageRecord, find_images
from mmseg_text.data.metadata import find_metadata_file, load_metadata, person_meta
from mmseg_text.training.data_setup import build_preprocessor

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / ".cache" / "bench_synthetic_2048"
SOURCE_SIZE = 2048


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="synthetic set to reuse (made here when missing)")
    p.add_argument("--n", type=int, default=16, help="training images timed")
    p.add_argument("--size", type=int, default=512, help="cache (working) size")
    p.add_argument("--crop", type=int, default=None, help="time crops of this size from the --size cache")
    p.add_argument("--workers", type=int, default=2, help="processes for the synthetic set and the cache build")
    p.add_argument("--reps", type=int, default=3, help="timed passes over the n images, per path")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def ensure_dataset(root: Path, n: int, workers: int, seed: int) -> list[ImageRecord]:
    """The first n labelled training images of ROOT; generated at 2048 px when there are too few."""
    if (root / "train" / "DCM").is_dir():
        records = [r for r in find_images(root, "train") if r.json_path is not None]
        if len(records) >= n:
            return records[:n]
        shutil.rmtree(root)
    from mmseg_text.data.synthetic import generate_dataset

    ids = int(np.ceil(n / 2 / 0.6)) + 2  # about a quarter of the IDs land in test/
    print(f"making {ids} synthetic people at {SOURCE_SIZE} px in {root}", file=sys.stderr)
    generate_dataset(root, ids=ids, size=SOURCE_SIZE, seed=seed, workers=workers)
    records = [r for r in find_images(root, "train") if r.json_path is not None]
    if len(records) < n:
        raise RuntimeError(f"{root}: only {len(records)} labelled training images, asked for {n}")
    return records[:n]


def naive_baseline(record: ImageRecord, names: Sequence[str], size: int):
    """As the competition baseline's XRayDataset + albumentations Resize."""
    image = cv2.imread(str(record.image_path)) / 255.0
    label = np.zeros(image.shape[:2] + (len(names),), dtype=np.uint8)
    index = {n: k for k, n in enumerate(names)}
    for ann in json.loads(record.json_path.read_text())["annotations"]:
        class_label = np.zeros(image.shape[:2], dtype=np.uint8)
        cv2.fillPoly(class_label, [np.array(ann["points"], dtype=np.int32)], 1)
        label[..., index[ann["label"]]] = class_label
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    label = np.stack([cv2.resize(label[..., k], (size, size), interpolation=cv2.INTER_NEAREST)
                      for k in range(len(names))])
    return image, label


def naive_lean(record: ImageRecord, names: Sequence[str], size: int):
    image = cv2.imread(str(record.image_path), cv2.IMREAD_GRAYSCALE)
    masks = np.zeros((len(names),) + image.shape, dtype=np.uint8)
    index = {n: k for k, n in enumerate(names)}
    for ann in json.loads(record.json_path.read_text())["annotations"]:
        cv2.fillPoly(masks[index[ann["label"]]], [np.round(np.asarray(ann["points"])).astype(np.int32)], 1)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    masks = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) for m in masks])
    return image, masks


def _pass_seconds(fn: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return time.perf_counter() - start


def main(argv: List[str] | None = None) -> dict:
    args = parse_args(argv)
    cv2.setNumThreads(1)  # one core per loader worker, as in a DataLoader process
    names = load_catalogue().names
    records = ensure_dataset(Path(args.root), args.n, args.workers, args.seed)
    for r in records:  # page cache: every path reads from memory
        r.image_path.read_bytes(), r.json_path.read_bytes()

    cache_dir = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        start = time.perf_counter()
        report = build_cache(records, cache_dir=cache_dir, image_size=args.size, class_names=names,
                             workers=args.workers, progress=False)
        build_s = time.perf_counter() - start
        if report.failed:
            raise RuntimeError(f"cache build failed: {report.failed[:3]}")
        paths = report.paths
        cache_bytes = sum(p.stat().st_size for p in paths)

        # the training path: the default encoder's normalisation, samples from the cache built above
        preprocess = build_preprocessor(Config(data=DataConfig(root=args.root, image_size=args.size, augment=[],
                                                               crop_size=args.crop)))
        ds = SegmentationDataset(records, _facts(Path(args.root), records), class_names=names, preprocess=preprocess,
                                 cache_dir=cache_dir, workers=0, progress=False, name="benchmark", crop=args.crop,
                                 augment_seed=args.seed)

        # correctness: the cached masks agree with the naive full-resolution fill
        naive_masks = naive_lean(records[0], names, args.size)[1] >= 1
        cached_masks = load_cached(paths[0]).masks
        agreement = float((naive_masks == cached_masks).mean())

        rng = np.random.default_rng(args.seed)
        crop = _cropper(args.crop, args.size, rng)
        cases = {
            "naive_baseline": lambda i: crop(*naive_baseline(records[i], names, args.size)),
            "naive_lean": lambda i: crop(*naive_lean(records[i], names, args.size)),
            "cached": ((lambda i: load_cached(paths[i])) if args.crop is None else
                       (lambda i: load_window(paths[i], records[i], args.size, names, args.crop,
                                              lambda fg: pick_origin(fg, args.size, args.crop, rng)))),
            "dataset_cached": lambda i: ds[i],
        }
        for fn in cases.values():  # warm-up
            fn(0)
        seconds: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.reps):
            for name, fn in cases.items():
                seconds[name].append(_pass_seconds(fn, len(records)))
        rate = {k: len(records) / statistics.median(v) for k, v in seconds.items()}
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    result = {
        "source_size": SOURCE_SIZE,
        "image_size": args.size,
        "crop_size": args.crop,
        "n_images": len(records),
        "samples_per_s": {k: round(v, 1) for k, v in rate.items()},
        "speedup_cached_vs_naive_baseline": round(rate["cached"] / rate["naive_baseline"], 1),
        "speedup_cached_vs_naive_lean": round(rate["cached"] / rate["naive_lean"], 1),
        "speedup_dataset_vs_naive_baseline": round(rate["dataset_cached"] / rate["naive_baseline"], 1),
        "cache_build_s": round(build_s, 2),
        "cache_build_workers": args.workers,
        "cache_mb_per_image": round(cache_bytes / len(records) / 2**20, 3),
        "source_png_mb_per_image": round(sum(r.image_path.stat().st_size for r in records) / len(records) / 2**20, 3),
        "mask_pixel_agreement_cached_vs_full_res": round(agreement, 5),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if result["speedup_cached_vs_naive_baseline"] < 5:
        print("cached loader is less than 5x faster than the naive baseline", file=sys.stderr)
    return result


def _cropper(crop: int | None, size: int, rng: np.random.Generator) -> Callable:
    """What a naive loader does for a training crop: slice a random window of the whole sample it built."""
    def cut(image: np.ndarray, masks: np.ndarray):
        if crop is None:
            return image, masks
        y0, x0 = (int(v) for v in rng.integers(0, size - crop + 1, 2))
        return image[y0:y0 + crop, x0:x0 + crop], masks[:, y0:y0 + crop, x0:x0 + crop]
    return cut


def _facts(root: Path, records: Sequence[ImageRecord]) -> list[ImageFacts]:
    """Metadata as in training; side/angle are not timed here (unknown: nothing derived from the polygons)."""
    meta_path = find_metadata_file(root)
    metadata = load_metadata(meta_path) if meta_path is not None else None
    return [ImageFacts(side="unknown", meta={**person_meta(metadata, r.person_id), "wrist_angle_deg": None,
                                             "bent_wrist": None}) for r in records]


if __name__ == "__main__":
    sys.exit(0 if main()["speedup_cached_vs_naive_baseline"] >= 5 else 1)
