"""``mmseg-report RUN_DIR --evaluation FILE [--overlays DIR] [--wall-seconds S]``: write RUN_DIR/report.md."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from mmseg_text.cli.common import help_text, run_main


def _body(argv: Optional[Sequence[str]]) -> int:
    from mmseg_text.evaluation.report import write_report

    parser = argparse.ArgumentParser(prog="mmseg-report", description=help_text(__doc__))
    parser.add_argument("run_dir")
    parser.add_argument("--evaluation", required=True, help="evaluation.json written by mmseg-evaluate --out")
    parser.add_argument("--overlays", default=None, help="folder of overlay PNGs from mmseg-predict --save-overlays")
    parser.add_argument("--wall-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    overlays = sorted(Path(args.overlays).glob("*.png")) if args.overlays else []
    print(write_report(args.run_dir, args.evaluation, overlays, args.wall_seconds))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
