"""``mmseg-predict`` / ``scripts/predict.py``: exported model(s) + image folder -> ``image_name,class,rle`` CSV.

    mmseg-predict --checkpoint runs/demo/best --images ROOT/test/DCM [--with-meta --meta ROOT/meta_data.xlsx] \
        [--tta] [--tta-scales 1 1.25] [--resolution 2048 --window-overlap 0.5] [--batch-size N] \
        [--save-overlays DIR] [--num-workers N] [--mixed-precision bf16] [--no-postprocess] --out submission.csv
Several ``--checkpoint`` directories (or a run directory holding fold*/best) make an ensemble: their
probabilities are averaged (``--weights``) and so are their tuned thresholds. Options left out take the
first model's ``predict.*`` config values.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from mmseg_text.cli.common import help_text, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg-predict", description=help_text(__doc__))
    parser.add_argument("--checkpoint", required=True, nargs="+",
                        help="exported model folder(s), e.g. runs/demo/best; several make an ensemble")
    parser.add_argument("--images", required=True, help="folder tree of PNG/DICOM images (or one file)")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--with-meta", action="store_true", help="build captions from the metadata table")
    parser.add_argument("--meta", default=None, help="metadata table (meta_data.xlsx or .csv) for --with-meta")
    tta = parser.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="horizontal-flip TTA")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no TTA (default: the checkpoint config's)")
    parser.add_argument("--tta-scales", type=float, nargs="+", default=None, help="multi-scale TTA factors, e.g. 1 1.25")
    parser.add_argument("--resolution", type=int, default=None,
                        help="square inference resolution; above the training size the image is tiled into "
                             "training-size windows blended with a Gaussian (default: predict.resolution or the training size)")
    parser.add_argument("--window-overlap", type=float, default=None, help="window overlap fraction (default 0.5)")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per ensemble member")
    parser.add_argument("--derived-meta", default=None,
                        help="CSV of image_id, side, wrist_angle_deg[, bent_wrist]: used instead of the first pass")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: predict.batch_size)")
    parser.add_argument("--save-overlays", default=None, metavar="DIR", help="write colour overlay PNGs here")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers decoding images (default: predict.num_workers, 0 = main process)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                        help="autocast of the forward: bf16 or fp16 on GPU, bf16 on CPU (default: predict.mixed_precision)")
    parser.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                        help="ignore the per-class connected-component rules of thresholds.json (keep every blob)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mmseg_text.inference.predictor import PredictOptions, predict

    options = PredictOptions(with_meta=args.with_meta, meta_file=args.meta, derived_meta=args.derived_meta,
                             tta_hflip=args.tta, tta_scales=args.tta_scales, batch_size=args.batch_size,
                             postprocess=args.postprocess, resolution=args.resolution,
                             window_overlap=args.window_overlap, weights=args.weights, overlays_dir=args.save_overlays,
                             num_workers=args.num_workers, mixed_precision=args.mixed_precision)
    if args.device:
        options.device = args.device
    print(json.dumps(predict(args.checkpoint, args.images, args.out, options)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
