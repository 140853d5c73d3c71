"""``mmseg-probe``: change one caption fact at a time and measure how much a trained model's masks move.

    mmseg-probe --checkpoint runs/demo/best --images ROOT/test/DCM --meta ROOT/meta_data.xlsx [--n 8] [--out probe.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from mmseg_text.cli.common import help_text, run_main


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mmseg-probe", description=help_text(__doc__))
    parser.add_argument("--checkpoint", required=True, nargs="+", help="exported model folder(s)")
    parser.add_argument("--images", required=True, help="folder tree of PNG/DICOM images")
    parser.add_argument("--meta", required=True, help="metadata table (meta_data.xlsx or .csv)")
    parser.add_argument("--n", type=int, default=8, help="images probed (default 8)")
    parser.add_argument("--out", default=None, help="write the full result (per class) as JSON here")
    args = parser.parse_args(argv)
    import torch

    from mmseg_text.inference.image_files import find_image_files
    from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor
    from mmseg_text.studies.probe import probe
    from mmseg_text.io import atomic_write_json

    predictor = Predictor(args.checkpoint, PredictOptions(with_meta=True, meta_file=args.meta))
    files = find_image_files(args.images)[:args.n]
    images = ImageFiles(files, predictor.preprocess)
    pixels = torch.stack([images[i]["pixels"] for i in range(len(files))])
    metas = [predictor.person_facts(p) for p in files]
    facts = predictor.image_facts(pixels, files, metas)
    metas = [{**m, "wrist_angle_deg": f["wrist_angle_deg"], "bent_wrist": f["bent_wrist"]} for m, f in zip(metas, facts)]
    result = probe(predictor, pixels, [f["side"] for f in facts], metas)
    print(f"{'change':<28} {'mean |dp|':>10} {'Dice vs unchanged':>18}")
    for name, row in result["changes"].items():
        print(f"{name:<28} {row['mean_abs_change']:>10.2e} {row['dice_vs_unchanged']:>18.4f}")
    print("gates tanh(g):", json.dumps(result["gates"]))
    if args.out:
        atomic_write_json(Path(args.out), {"images": [str(p) for p in files], **result})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
