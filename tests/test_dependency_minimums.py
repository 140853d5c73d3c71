"""The declared minimum versions really work: pyproject.toml is the one source of the floors.

The floors of albumentations, accelerate, open_clip_torch and timm (pure-Python wheels) are installed
with ``pip install --no-deps --target`` and put first on PYTHONPATH of a subprocess that calls every API
the package uses from them (tests/dependency_minimums_probe.py); the other libraries come from this
environment. Companion packages that a floor pins and this environment does not satisfy (albucore for
albumentations) are installed the same way. Skipped only when pip cannot reach the package index.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the dev extra installs tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("albumentations", "accelerate", "open-clip-torch", "timm")
# What pip prints when the index is unreachable (as opposed to a version that does not exist).
NO_INDEX = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
            "Name or service not known", "Network is unreachable", "ConnectTimeoutError", "ProxyError",
            "Max retries exceeded", "No route to host", "Connection refused")


def declared_requirements() -> dict[str, Requirement]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {canonicalize_name(req.name): req for req in map(Requirement, dependencies)}


def floor(req: Requirement) -> Version:
    """The version of a ``name>=X`` requirement (the one form a checked floor may take)."""
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == ">=", f"{req}: declare the floor as '{req.name}>=X' only"
    return Version(specs[0].version)


def declared_minimums() -> dict[str, Version]:
    declared = declared_requirements()
    missing = [name for name in CHECKED if name not in declared]
    assert not missing, f"pyproject.toml no longer declares {missing}"
    return {name: floor(declared[name]) for name in CHECKED}


def test_each_checked_dependency_declares_one_floor():
    minimums = declared_minimums()
    assert set(minimums) == set(CHECKED)
    assert all(v.release and not v.is_prerelease for v in minimums.values()), minimums


def _pip_install(target: Path, specs: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check",
           "--no-input", "--retries", "1", "--timeout", "20", "--target", str(target), *specs]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        unreachable = [line.strip() for line in output.splitlines() if any(m in line for m in NO_INDEX)]
        if unreachable:
            pytest.skip(f"pip cannot reach the package index to install {' '.join(specs)}: {unreachable[0][-240:]}")
        pytest.fail(f"pip install {' '.join(specs)} failed (exit {done.returncode}):\n{output[-3000:]}")


def _installed(target: Path) -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(target)])}


def _requirements(dist: metadata.Distribution) -> list[Requirement]:
    """Its install requirements that apply here (no extras)."""
    reqs = [Requirement(line) for line in dist.requires or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _unsatisfied_here(req: Requirement) -> bool:
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return True
    return not req.specifier.contains(version, prereleases=True)


@pytest.fixture(scope="module")
def minimum_install(tmp_path_factory) -> dict:
    minimums = declared_minimums()
    target = tmp_path_factory.mktemp("minimums")
    _pip_install(target, [f"{name}=={version}" for name, version in minimums.items()])
    dists = _installed(target)
    declared = declared_requirements()
    companions = sorted({str(r) for name in CHECKED for r in _requirements(dists[name])
                         if canonicalize_name(r.name) not in declared and _unsatisfied_here(r)})
    if companions:  # e.g. albumentations 1.4.21 pins albucore==0.0.20
        _pip_install(target, companions)
        dists = _installed(target)
    return {"target": target, "minimums": minimums, "dists": dists, "companions": companions}


def test_floors_are_what_got_installed(minimum_install):
    versions = {name: Version(minimum_install["dists"][name].version) for name in CHECKED}
    assert versions == minimum_install["minimums"]


def test_floors_satisfy_each_other(minimum_install):
    """Every floor's requirement on a package this project declares is met by that package's declared floor:
    all floors together are one installable set (e.g. open_clip_torch 3.1 needs timm>=1.0.17)."""
    declared = declared_requirements()
    conflicts = []
    for name in CHECKED:
        for req in _requirements(minimum_install["dists"][name]):
            ours = declared.get(canonicalize_name(req.name))
            if ours is None or not any(s.operator == ">=" for s in ours.specifier):
                continue
            lowest = max(Version(s.version) for s in ours.specifier if s.operator == ">=")
            if not req.specifier.contains(lowest, prereleases=True):
                conflicts.append(f"{name}=={minimum_install['minimums'][name]} requires {req}, "
                                 f"but pyproject.toml allows {ours}")
    assert not conflicts, "\n".join(conflicts)


def test_the_package_runs_on_the_declared_floors(minimum_install):
    target = minimum_install["target"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "dependency_minimums_probe.py")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=str(target))
    assert done.returncode == 0, f"an API call failed on {minimum_install['minimums']}:\n{done.stderr[-4000:]}"
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for name, version in minimum_install["minimums"].items():
        got_version, module_file = found[name]
        assert Version(got_version) == version, (name, got_version)
        assert Path(module_file).is_relative_to(target.resolve()), f"{name} was imported from {module_file}"
