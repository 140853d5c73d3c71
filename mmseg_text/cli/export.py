"""``mmseg-export``: an exported model directory -> an ONNX graph checked against PyTorch, or a hub-style folder.

    mmseg-export --checkpoint runs/demo/best --onnx model.onnx [--image IMG] [--size N] [--tolerance 1e-4]
    mmseg-export --checkpoint runs/demo/best --save-pretrained my-model/

The ONNX graph takes the image and, for models that read a caption per image, the caption's cached embeddings
(``model.captions.npz`` beside it holds the no-metadata caption's); it is run with onnxruntime on the CPU against
the PyTorch model on one image, and a logit difference above ``--tolerance`` is an error. One JSON line reports it.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from mmseg_text.cli.common import help_text, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseg-export", description=help_text(__doc__))
    parser.add_argument("--checkpoint", required=True, help="exported model folder, e.g. runs/demo/best")
    parser.add_argument("--onnx", default=None, metavar="FILE", help="write the ONNX graph here and check it")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument("--image", default=None,
                        help="image (PNG/DICOM) the check runs on (default: a seeded random image)")
    parser.add_argument("--size", type=int, default=None,
                        help="square size of the check's input (default: the model's input size; any multiple of 32)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |logit| difference accepted")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both runtimes in the check's timing")
    parser.add_argument("--save-pretrained", default=None, metavar="DIR",
                        help="write a hub-style model folder with a model card (from_pretrained loads it)")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.onnx and not args.save_pretrained:
        parser.error("give --onnx FILE and/or --save-pretrained DIR")
    from mmseg_text.inference.model_dir import load_exported

    report: dict = {"checkpoint": args.checkpoint}
    exported = load_exported(args.checkpoint)  # once, for every output
    if args.save_pretrained:
        from mmseg_text.inference.pretrained import save_pretrained

        report["saved_pretrained"] = str(save_pretrained(exported, args.save_pretrained))
    if args.onnx:
        from mmseg_text.inference.onnx_export import DEFAULT_OPSET, export_onnx, verify_onnx

        image = None
        if args.image:
            from mmseg_text.data.images import read_image

            image = read_image(args.image)
        export_onnx(exported, args.onnx, opset=args.opset or DEFAULT_OPSET)
        check = verify_onnx(exported, args.onnx, image=image, size=args.size, tolerance=args.tolerance,
                            threads=args.threads)
        report["onnx"] = check.to_dict()
        if not check.ok:
            raise ValueError(f"{args.onnx}: onnxruntime and PyTorch logits differ by {check.max_abs_logit_diff:.3g} "
                             f"> --tolerance {args.tolerance:g} on a {check.input_shape} input")
    print(json.dumps(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
