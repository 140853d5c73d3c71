#!/usr/bin/env python
"""Derive hand side and wrist angle from the annotation polygons of a dataset split and write them to
data/meta/derived_<name>.csv (columns image_id, person_id, side, wrist_angle_deg, bent_wrist).

    python scripts/derive_meta.py data/synthetic --split train
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from mmseg_text.catalogue import REPO_ROOT
from mmseg_text.data.wrist import WristGeometryError, derive_metadata
from mmseg_text.io import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (ROOT/<split>/DCM and ROOT/<split>/outputs_json)")
    parser.add_argument("--name", help="output name: data/meta/derived_<name>.csv (default: ROOT's folder name)")
    parser.add_argument("--split", default="train", help="split folder to read (default train)")
    parser.add_argument("--out", help="write here instead of data/meta/derived_<name>.csv")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    name = args.name or root.resolve().name
    out = Path(args.out) if args.out else REPO_ROOT / "data" / "meta" / f"derived_{name}.csv"
    try:
        frame = derive_metadata(root, args.split, progress=True)
        atomic_write_text(out, frame.to_csv(index=False))
    except (WristGeometryError, ValueError, OSError) as err:
        print(f"derive_meta: {err}", file=sys.stderr)
        return 1
    print(f"{out}: {len(frame)} images, {int(frame['bent_wrist'].sum())} bent wrists, "
          f"{int((frame['side'] == 'right').sum())} right hands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
