"""``mmseg-make-synthetic``: write a synthetic hand X-ray dataset in the real on-disk layout (train/test DCM + outputs_json,
meta_data.xlsx, synthetic_truth.csv, synthetic_card.json).

    mmseg-make-synthetic --out data/synthetic --ids 40 --size 512 --seed 0 --workers 2
    mmseg-make-synthetic --out data/synthetic_degrade1 --ids 40 --size 512 --degrade 1   # same truth, bones hidden
    mmseg-make-synthetic --out data/synthetic_degrade1_hand --ids 40 --size 512 --degrade 1 --fade hand  # no anatomy
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mmseg_text.cli.common import help_text
from mmseg_text.data.synthetic import FADES, generate_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg-make-synthetic", description=help_text(__doc__))
    parser.add_argument("--out", required=True, help="dataset root to write (created if missing)")
    parser.add_argument("--ids", type=int, required=True, help="number of people (two images each)")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--workers", type=int, default=1, help="processes drawing images in parallel")
    parser.add_argument("--degrade", type=float, default=0.0,
                        help="0-1: fade the bones and add blur and noise (the metadata study's dose-response); "
                             "masks and metadata unchanged (default 0)")
    parser.add_argument("--fade", choices=FADES, default="bones",
                        help="what --degrade fades: the bones only (the soft-tissue silhouette stays) or the whole "
                             "hand with its side letter, so that at 1 only the metadata tells (default %(default)s)")
    parser.add_argument("--skip-existing", action="store_true", help="keep images whose PNG and JSON exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate_dataset(args.out, ids=args.ids, size=args.size, seed=args.seed,
                                   workers=args.workers, progress=not args.no_progress,
                                   skip_existing=args.skip_existing, degrade=args.degrade, fade=args.fade)
    except (ValueError, OSError) as err:
        print(f"make_synthetic: {err}", file=sys.stderr)
        return 1
    images, bent = summary["images"], summary["bent_wrist"]
    print(f"{summary['out']}: {summary['written']} images written, {summary['skipped']} kept; "
          f"train {images['train']} ({bent['train']} bent wrists), test {images['test']} "
          f"({bent['test']} bent wrists); degrade {summary['degrade']:g} ({summary['fade']}); {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
