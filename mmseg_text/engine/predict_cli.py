"""``scripts/predict.py``: checkpoint + image folder -> ``image_name,class,rle`` CSV (atomic)."""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from mmseg_text.engine.cli import run_main


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="model folder (model.safetensors + config.yaml), e.g. runs/demo/best")
    parser.add_argument("--images", required=True, help="folder tree of PNG/DICOM images (or one file)")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--with-meta", action="store_true", help="build captions from the metadata table")
    parser.add_argument("--meta", default=None, help="metadata table (meta_data.xlsx or .csv) for --with-meta")
    tta = parser.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="horizontal-flip TTA")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no TTA (default: the checkpoint config's)")
    parser.add_argument("--save-overlays", default=None, metavar="DIR", help="write colour overlay PNGs here")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    args = parser.parse_args(argv)

    from mmseg_text.engine.inference import PredictOptions, predict

    options = PredictOptions(with_meta=args.with_meta, meta_file=args.meta, tta_hflip=args.tta, overlays_dir=args.save_overlays)
    if args.device:
        options.device = args.device
    report = predict(args.checkpoint, args.images, args.out, options)
    print(json.dumps(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)
