"""Score a submission CSV against ground-truth polygons (per-class, grouped and mean Dice).

    python scripts/evaluate.py --pred submission.csv --gt ROOT/test/outputs_json [--images ROOT/test/DCM] \
        [--classes data/meta/hand_bones.yaml] [--out DIR]

The work is done by ``mmseg_text.engine.evaluate_csv.main``, which tests call directly.
"""
from __future__ import annotations

import sys

from mmseg_text.engine.evaluate_csv import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
