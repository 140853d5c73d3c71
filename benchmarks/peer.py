"""Our default recipe vs a plain segmentation_models_pytorch UNet, same data and budget. JSON on stdout.

Both sides train on the training split of the same fold of --root (build_run_data: the same images, the same
cached 256 px pixels and masks), --steps optimizer steps of --batch-size images each, the sample order of the
same seedable sampler (accelerate's SeedableRandomSampler, seed train.seed + epoch), and both predict the test
split (ROOT/test/DCM) without TTA into a submission CSV scored by evaluation/scoring.evaluate_submission against
ROOT/test/outputs_json: per-image Dice at each image's original resolution, the same code path for both.
  ours  configs/demo.yaml with text.mode=none (the peer reads no text): timm tf_efficientnet_lite0 with its
        packaged ImageNet weights, our UNet decoder, the config's loss (the demo's: MONAI Dice + Focal), AdamW
        3e-3 with warm-up and cosine decay, the config's augmentation (flip, rotation, brightness/contrast);
        trained by training/loop.train (which validates and checkpoints on its own schedule, inside its
        train_seconds: the timing is conservative for ours) and predicted by inference/predictor.predict from output_dir/best, with the per-class thresholds the recipe
        tuned on its validation fold
  peer  smp.Unet("resnet18", encoder_weights=None, in_channels=1): random init, input = cached pixels / 255,
        horizontal flip p=0.5 (seeded per epoch and sample), BCE + smp's soft Dice (multilabel), AdamW lr 1e-3
        with cosine decay over the run; probabilities at the training size upsampled bilinearly to the
        original size, threshold 0.5
Reported per side: test mean Dice, Dice per class group, train seconds (the training loop), steps, images seen;
then dice_ratio_ours_over_peer (> 1: ours ahead, as it must stay), time_ratio_peer_over_ours and the machine.
The sides run one after the other (--peer-first swaps them): run on a quiet machine for the timing.

    .venv/bin/python benchmarks/peer.py [--steps N] [--batch-size 4] [--root data/synthetic] [--threads N]
                                        [--out DIR] [--require-ahead]
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: the demo's encoder weights ship in a package
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import contextlib
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from progress_log import log  # benchmarks/ is this script's folder, first on sys.path

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEMO_CONFIG), help="our recipe (default the demo's)")
    p.add_argument("--root", default=None, help="dataset root (default: the config's data.root)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps of each side (default: the config's train.max_steps)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step of each side (default 4, the demo's)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads (default: all cores)")
    p.add_argument("--out", default=None, help="keep the runs, CSVs and evaluations here (default: a temporary folder)")
    p.add_argument("--peer-first", action="store_true", help="train the peer before ours")
    p.add_argument("--require-ahead", action="store_true", help="exit 1 unless our test Dice beats the peer's")
    p.add_argument("overrides", nargs="*", help="further config overrides for our side (key=value)")
    return p.parse_args(argv)


def our_config(args: argparse.Namespace, work: Path):
    from mmseg_text.config import load_config

    overrides = ["text.mode=none", f"train.batch_size={args.batch_size}", f"output_dir={work / 'ours'}"]
    if args.steps is not None:
        overrides.append(f"train.max_steps={args.steps}")
    if args.root:
        overrides.append(f"data.root={args.root}")
    cfg = load_config(args.config, overrides + list(args.overrides))
    args.steps = cfg.train.max_steps  # the peer trains as many steps as ours
    return cfg


def score(csv: Path, root: Path, out: Path) -> dict[str, Any]:
    from mmseg_text.evaluation.scoring import evaluate_submission, write_evaluation

    result = evaluate_submission(csv, root / "test" / "outputs_json", root / "test" / "DCM")
    write_evaluation(result, out)
    return {"test_mean_dice": round(result["mean_dice"], 4),
            "test_grouped_dice": {g: round(v, 4) for g, v in result["groups"].items()},
            "test_images": result["num_images"]}


# ---- ours
def run_ours(cfg, root: Path, work: Path) -> dict[str, Any]:
    from mmseg_text.inference.predictor import PredictOptions, predict
    from mmseg_text.training.loop import train

    summary = train(cfg)
    csv = work / "ours_submission.csv"
    options = PredictOptions(tta_hflip=False, tta_scales=[1.0])  # no TTA, as the peer
    predict(Path(cfg.output_dir) / "best", root / "test" / "DCM", csv, options)
    return {"model": f"ours: {cfg.model.encoder} ({cfg.model.encoder_weights}), text.mode=none",
            **score(csv, root, work / "ours_evaluation"),
            "train_seconds": summary["train_seconds"], "steps": summary["steps"],
            "images_seen": round(summary["images_per_second"] * summary["train_seconds"]),
            "best_step": summary["best_step"], "thresholds": "tuned per class on the validation fold"}


# ---- peer
class PeerSamples(Dataset):
    """The training split's cached pixels / 255 as one channel and its masks; flipped with p=0.5, drawn per
    (seed, epoch, sample)."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks, _ = self.base.load_arrays(i)
        if np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0)[None]
        return image, torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))


def run_peer(cfg, root: Path, work: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import segmentation_models_pytorch as smp
    from accelerate.data_loader import SeedableRandomSampler

    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.training.data_setup import build_run_data
    from mmseg_text.inference.image_files import find_image_files
    from mmseg_text.inference.predictor import ImageFiles, collate_images
    from mmseg_text.rle import rle_encode, write_submission

    catalogue = load_catalogue(cfg.data.classes)
    data = build_run_data(cfg, catalogue, progress=False)
    seed = cfg.train.seed
    samples = PeerSamples(data.train, seed)
    sampler = SeedableRandomSampler(samples, data_seed=seed)  # the order our prepared loader draws (train.py)
    loader = DataLoader(samples, batch_size=min(args.batch_size, len(samples)), sampler=sampler, drop_last=True,
                        num_workers=cfg.data.num_workers)
    torch.manual_seed(seed)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=len(catalogue)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    bce, dice = torch.nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("multilabel", from_logits=True)

    steps = seen = epoch = 0
    model.train()
    started = time.perf_counter()
    while steps < args.steps:
        sampler.set_epoch(epoch)
        samples.epoch = epoch
        for images, masks in loader:
            images, masks = images.to(device), masks.to(device)
            logits = model(images)
            loss = bce(logits, masks) + dice(logits, masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps, seen = steps + 1, seen + images.shape[0]
            if steps == args.steps:
                break
        epoch += 1
    train_seconds = time.perf_counter() - started

    files = find_image_files(root / "test" / "DCM")
    test = DataLoader(ImageFiles(files, data.preprocess), batch_size=cfg.predict.batch_size, collate_fn=collate_images)
    model.eval()

    def rows():
        with torch.no_grad():
            for batch in test:
                probs = torch.sigmoid(model(batch["pixels"][:, None].float().div(255.0).to(device)))
                for i, p, size in zip(batch["index"], probs, batch["orig_size"]):
                    masks = F.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0] > 0.5
                    for name, mask in zip(catalogue.names, masks.cpu().numpy()):
                        yield files[i].name, name, rle_encode(mask)

    csv = work / "peer_submission.csv"
    write_submission(csv, rows())
    return {"model": "smp.Unet('resnet18', encoder_weights=None, in_channels=1)",
            **score(csv, root, work / "peer_evaluation"),
            "train_seconds": round(train_seconds, 2), "steps": steps, "images_seen": seen,
            "train_images": len(samples), "thresholds": "0.5 for every class"}


# ---- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    from mmseg_text.training.demo_data import ensure_demo_data

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_peer_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg = our_config(args, work)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what train() and predict() pick
        sides: dict[str, Any] = {}
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON (train() prints its validations)
            root = ensure_demo_data(cfg)  # data/synthetic is made on first use, as by scripts/train.py
            if not (root / "test" / "outputs_json").is_dir():
                raise SystemExit(f"{root}: no test/outputs_json to score against (make data, or pass --root)")
            for side in (("peer", "ours") if args.peer_first else ("ours", "peer")):
                log(f"training and scoring {side}")
                sides[side] = run_ours(cfg, root, work) if side == "ours" else run_peer(cfg, root, work, args, device)
        ours, peer = sides["ours"], sides["peer"]
        import segmentation_models_pytorch as smp

        result = {
            "setup": {"config": str(args.config), "root": str(root), "image_size": cfg.data.image_size,
                      "fold": cfg.data.fold, "train_images": peer.pop("train_images"), "steps": args.steps,
                      "batch_size": args.batch_size, "seed": cfg.train.seed,
                      "order": list(sides), "device": str(device), "torch_threads": torch.get_num_threads(),
                      "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                      "python": platform.python_version(), "torch": torch.__version__, "smp": smp.__version__},
            "ours": ours,
            "peer": peer,
            "dice_ratio_ours_over_peer": round(ours["test_mean_dice"] / max(peer["test_mean_dice"], 1e-9), 4),
            "time_ratio_peer_over_ours": round(peer["train_seconds"] / ours["train_seconds"], 4),
            "ours_ahead": ours["test_mean_dice"] > peer["test_mean_dice"],
        }
        log("done")
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.require_ahead and not result["ours_ahead"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
