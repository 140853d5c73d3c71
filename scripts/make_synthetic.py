#!/usr/bin/env python
"""Write the synthetic hand X-ray dataset in the real on-disk layout.

    python scripts/make_synthetic.py --out data/synthetic --ids 40 --size 512

A thin shell over ``mmseg_text.cli.make_synthetic`` (installed as ``mmseg-make-synthetic``).
"""
import sys

from mmseg_text.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
