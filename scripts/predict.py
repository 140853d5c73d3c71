#!/usr/bin/env python
"""Predict masks and write the submission CSV.

    python scripts/predict.py --checkpoint runs/demo/best --images ROOT/test/DCM \
        [--with-meta --meta ROOT/meta_data.xlsx] [--tta] [--save-overlays DIR] --out submission.csv

A thin shell over ``mmseg_text.cli.predict`` (installed as ``mmseg-predict``).
"""
import sys

from mmseg_text.cli.predict import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
