"""``mmseg-ablate``: train every text variant K times and write ablation.{md,json,png}.

    mmseg-ablate --config configs/demo.yaml --seeds 2 --out runs/ablation [--variants none,meta] [key=value ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from mmseg_text.cli.common import add_config_args, run_main


def _body(argv: Sequence[str] | None) -> int:
    from mmseg_text.engine.ablation import VARIANTS, run_ablation

    parser = argparse.ArgumentParser(prog="mmseg-ablate", description=__doc__.splitlines()[0])
    add_config_args(parser, default_config=None)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per variant (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder (runs, ablation.md/json/png)")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                        help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {v.name for v in VARIANTS})
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {[v.name for v in VARIANTS]}")
    variants = [v for v in VARIANTS if v.name in wanted]
    result = run_ablation(args.config, args.out, args.seeds, args.overrides, variants)
    print((Path(args.out) / "ablation.md").read_text())
    return 0 if result else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
