"""The package keeps its layout: inference never imports training, and the README's layout lists the tree."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_inference_and_evaluation_do_not_import_training():
    code = ("import sys, mmseg_text.inference.predictor, mmseg_text.inference.model_dir, mmseg_text.cli.predict, "
            "mmseg_text.evaluation.scoring, mmseg_text.cli.evaluate; "
            "print(sorted(m for m in sys.modules if m.startswith('mmseg_text.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"


def test_the_readme_layout_lists_every_package_and_top_level_module():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed_dirs = set(re.findall(r"mmseg_text/(\w+)/", block))
    packages = {p.name for p in (REPO / "mmseg_text").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert listed_dirs == packages
    modules = {p.name for p in (REPO / "mmseg_text").glob("*.py") if p.name != "__init__.py"}
    listed_modules = set(re.findall(r"(\w+\.py)", block))
    assert modules <= listed_modules, sorted(modules - listed_modules)
