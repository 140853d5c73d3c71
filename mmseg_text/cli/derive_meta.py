"""``mmseg-derive-meta ROOT``: derive hand side and wrist angle from the annotation polygons of a split and
write them as a CSV (columns image_id, person_id, side, wrist_angle_deg, bent_wrist), for ``data.derived_meta``.

    mmseg-derive-meta data/synthetic --split train [--classes hand_bones] [--out ROOT/derived_meta_<split>.csv]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from mmseg_text.cli.common import help_text
from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.layout import find_images
from mmseg_text.data.wrist import WristGeometryError, derive_metadata
from mmseg_text.io import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg-derive-meta", description=help_text(__doc__))
    parser.add_argument("root", help="dataset root (ROOT/<split>/DCM and ROOT/<split>/outputs_json)")
    parser.add_argument("--split", default="train", help="split folder to read (default train)")
    parser.add_argument("--classes", default=None, help="class catalogue declaring derived.hand_geometry (default hand_bones)")
    parser.add_argument("--out", help="CSV to write (default ROOT/derived_meta_<split>.csv)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    out = Path(args.out) if args.out else root / f"derived_meta_{args.split}.csv"
    try:
        catalogue = load_catalogue(args.classes)
        if catalogue.hand_geometry is None:
            raise ValueError(f"{catalogue.source} declares no derived.hand_geometry: nothing to derive")
        records = find_images(root, args.split)
        if not any(r.json_path is not None for r in records):
            raise FileNotFoundError(f"no annotation JSONs under {root / args.split / 'outputs_json'}: "
                                    "the wrist angle is derived from bone polygons")
        frame = derive_metadata(records, catalogue.hand_geometry, progress=True)
        atomic_write_text(out, frame.to_csv(index=False))
    except (WristGeometryError, ValueError, OSError) as err:
        print(f"derive_meta: {err}", file=sys.stderr)
        return 1
    print(f"{out}: {len(frame)} images, {int(frame['bent_wrist'].sum())} bent wrists, "
          f"{int((frame['side'] == 'right').sum())} right hands")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
