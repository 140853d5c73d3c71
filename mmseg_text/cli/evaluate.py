"""``mmseg-evaluate``: score a submission CSV against ground-truth polygons (per-class, grouped, mean Dice).

    mmseg-evaluate --pred submission.csv --gt ROOT/test/outputs_json [--images ROOT/test/DCM] [--classes FILE] [--out DIR] [--facts PRED_facts.csv]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from mmseg_text.cli.common import help_text, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg-evaluate", description=help_text(__doc__))
    parser.add_argument("--pred", required=True, type=Path, help="submission CSV (image_name,class,rle)")
    parser.add_argument("--gt", required=True, type=Path, help="annotation folder, e.g. ROOT/test/outputs_json")
    parser.add_argument("--images", type=Path, default=None,
                        help="image folder giving each image's size (default: the DCM folder beside --gt)")
    parser.add_argument("--classes", default=None, help="class catalogue: a YAML path or a bundled name (default: hand_bones)")
    parser.add_argument("--out", type=Path, default=None, help="folder for evaluation.json and evaluation.md (default: print only)")
    parser.add_argument("--facts", type=Path, default=None,
                        help="per-image bent_wrist CSV (the *_facts.csv beside a prediction): Dice of bent and straight wrists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _body(argv: Optional[Sequence[str]]) -> int:
    from mmseg_text.evaluation.scoring import evaluate_submission, format_markdown, write_evaluation

    args = build_parser().parse_args(argv)
    result = evaluate_submission(args.pred, args.gt, args.images, args.classes, progress=not args.no_progress,
                                 facts=args.facts)
    print(format_markdown(result), end="")
    if args.out is not None:
        print(f"wrote {write_evaluation(result, args.out)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
