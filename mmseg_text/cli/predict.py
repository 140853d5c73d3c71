"""``mmseg-predict`` / ``scripts/predict.py``: exported model(s) + image folder -> ``image_name,class,rle`` CSV.

    mmseg-predict --checkpoint runs/demo/best --images ROOT/test/DCM [--with-meta --meta ROOT/meta_data.xlsx] \
        [--tta] [--batch-size N] [--save-overlays DIR] --out submission.csv
Several ``--checkpoint`` directories make an ensemble (their probabilities are averaged).
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from mmseg_text.cli.common import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg-predict", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, nargs="+",
                        help="exported model folder(s), e.g. runs/demo/best; several make an ensemble")
    parser.add_argument("--images", required=True, help="folder tree of PNG/DICOM images (or one file)")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--with-meta", action="store_true", help="build captions from the metadata table")
    parser.add_argument("--meta", default=None, help="metadata table (meta_data.xlsx or .csv) for --with-meta")
    tta = parser.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="horizontal-flip TTA")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no TTA (default: the checkpoint config's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: predict.batch_size)")
    parser.add_argument("--save-overlays", default=None, metavar="DIR", help="write colour overlay PNGs here")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mmseg_text.engine.prediction import PredictOptions, predict

    options = PredictOptions(with_meta=args.with_meta, meta_file=args.meta, tta_hflip=args.tta,
                             batch_size=args.batch_size, overlays_dir=args.save_overlays)
    if args.device:
        options.device = args.device
    print(json.dumps(predict(args.checkpoint, args.images, args.out, options)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
