#!/usr/bin/env python
"""Write RUN_DIR/report.md: python scripts/report.py RUN_DIR --evaluation FILE [--overlays DIR] [--wall-seconds S]"""
import argparse
import sys
from pathlib import Path

from mmseg_text.engine.report import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--evaluation", required=True, help="evaluation.json written by scripts/evaluate.py --out")
    parser.add_argument("--overlays", default=None, help="folder of overlay PNGs from scripts/predict.py --save-overlays")
    parser.add_argument("--wall-seconds", type=float, default=None)
    args = parser.parse_args()
    overlays = sorted(Path(args.overlays).glob("*.png")) if args.overlays else []
    print(write_report(args.run_dir, args.evaluation, overlays, args.wall_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
