"""``mmseg-check-data ROOT [--json]``: check a dataset folder before training.

Prints every problem grouped by kind with the file named; exits 1 when there are errors.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from mmseg_text.cli.common import help_text
from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.checks import check_dataset


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mmseg-check-data", description=help_text(__doc__))
    parser.add_argument("root", help="dataset root (ROOT/train/DCM, ROOT/train/outputs_json, ROOT/meta_data.xlsx)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--classes", default=None, help="class catalogue: a YAML path or a bundled name (default hand_bones)")
    parser.add_argument("--meta-file", default=None, help="metadata table (default ROOT/meta_data.xlsx or .csv)")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding images")
    args = parser.parse_args(argv)
    try:
        report = check_dataset(args.root, load_catalogue(args.classes), meta_file=args.meta_file,
                               workers=args.workers)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
