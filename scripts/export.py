#!/usr/bin/env python
"""Export a trained model: an ONNX graph checked against PyTorch, or a hub-style folder.

    python scripts/export.py --checkpoint runs/demo/best --onnx model.onnx
    python scripts/export.py --checkpoint runs/demo/best --save-pretrained my-model/

A thin shell over ``mmseg_text.cli.export`` (installed as ``mmseg-export``).
"""
import sys

from mmseg_text.cli.export import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
