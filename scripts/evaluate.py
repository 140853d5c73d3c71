#!/usr/bin/env python
"""Score a submission CSV against ground-truth polygons.

    python scripts/evaluate.py --pred submission.csv --gt ROOT/test/outputs_json [--out DIR]

A thin shell over ``mmseg_text.cli.evaluate`` (installed as ``mmseg-evaluate``).
"""
import sys

from mmseg_text.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
