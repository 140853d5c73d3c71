"""ONNX export vs PyTorch: the same logits, and onnxruntime's CPU forward time against PyTorch's. JSON on stdout.

An exported model directory (--checkpoint; default: a random-init model of configs/demo.yaml exported into a
temporary folder, since timing does not depend on the weights) is exported with ``mmseg-export``'s code
(``inference/onnx_export.py``) and, per --sizes and --threads, run on one seeded image in both runtimes:
  max_abs_logit_diff    largest |logit| difference, onnxruntime vs PyTorch (the check accepts <= 1e-4)
  torch_ms, ort_ms      median forward time of --reps after one warm-up, the two alternating (PyTorch in the
                        memory format prediction uses: channels_last when train.channels_last)
  ratio_torch_over_ort  > 1: onnxruntime is faster

    .venv/bin/python benchmarks/onnx_export.py [--checkpoint runs/demo/best] [--sizes 256 512] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _random_demo_model(folder: Path) -> Path:
    """configs/demo.yaml's model at random init, exported as training would (thresholds 0.5)."""
    import torch

    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.config import load_config
    from mmseg_text.inference.model_dir import export_model
    from mmseg_text.models import build_model
    from mmseg_text.text import build_text_tower
    from mmseg_text.training.data_setup import build_preprocessor

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "demo.yaml", ["model.encoder_weights=null"])
    catalogue = load_catalogue(cfg.data.classes)
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=len(catalogue), text_dim=build_text_tower(cfg.text).width,
                        image_size=cfg.data.image_size, in_chans=cfg.data.in_chans)
    return Path(export_model(folder / "model", model, cfg, catalogue, build_preprocessor(cfg),
                             thresholds=[0.5] * len(catalogue)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="exported model folder (default: random demo model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    import torch

    from mmseg_text.inference.model_dir import load_exported
    from mmseg_text.inference.onnx_export import export_onnx, verify_onnx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = load_exported(Path(args.checkpoint) if args.checkpoint else _random_demo_model(tmp))
        onnx_path = export_onnx(checkpoint, tmp / "model.onnx")
        rows = []
        for threads in args.threads:
            for size in args.sizes:
                report = verify_onnx(checkpoint, onnx_path, size=size, repeats=args.reps, threads=threads)
                rows.append({"size": size, "threads": threads, "max_abs_logit_diff": report.max_abs_logit_diff,
                             "torch_ms": round(report.torch_ms, 1), "ort_ms": round(report.onnxruntime_ms, 1),
                             "ratio_torch_over_ort": round(report.torch_ms / report.onnxruntime_ms, 2)})
        print(json.dumps({"checkpoint": str(args.checkpoint or "random demo model"), "inputs": report.inputs,
                          "onnx_mb": round(onnx_path.stat().st_size / 2 ** 20, 1), "torch": torch.__version__,
                          "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
