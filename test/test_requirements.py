"""The pinned environment resolves on every Python the robot or a developer may have (3.10 to 3.13).

JetPack 6 and Ubuntu 22.04 ship Python 3.10, Ubuntu 24.04 ships 3.12; numpy, onnxruntime, keras
and matplotlib drop old Pythons at different releases, so each Python has its own
requirements/constraints-py3.X.txt. The static checks run everywhere; the resolution runs
``tools/bootstrap.sh --dry-run`` (the setup's own pip command, run by this venv's pip for the other
interpreter) for each Python found here, against the package registry; it is skipped where either is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "tools" / "bootstrap.sh"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
RESOLVED_HERE = ("3.10", "3.12", "3.13")  # 3.11 is the dev venv's own, installed by every `make`
# pip freeze leaves these out (all three before Python 3.12, pip always), so a lock need not pin them.
UNPINNED_OK = {"pip", "setuptools", "wheel"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints_file(version: str) -> Path:
    return ROOT / "requirements" / f"constraints-py{version}.txt"


def read_pins(version: str) -> dict[str, str]:
    pins = {}
    for line in constraints_file(version).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line.strip())
        assert match, f"{constraints_file(version).name}: not an exact pin: {line!r}"
        pins[normalize(match[1])] = match[2]
    return pins


def installed_groups() -> list[Path]:
    """The requirement files the pip-wheel setup installs, as tools/bootstrap.sh lists them."""
    match = re.search(r'^groups="([^"]+)"', BOOTSTRAP.read_text(), re.M)
    assert match, "tools/bootstrap.sh no longer sets groups=\"...\""
    return [ROOT / name for name in match[1].split()]


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.match(r"[A-Za-z0-9._-]+", line)[0]))
    return names


@pytest.mark.parametrize("version", PYTHONS)
def test_every_requirement_is_pinned_for_each_python(version):
    pins = read_pins(version)
    for group in installed_groups():
        missing = requirement_names(group) - set(pins)
        assert not missing, f"{group.name} needs pins in constraints-py{version}.txt: {sorted(missing)} (make lock)"


def test_numpy_pins_follow_each_pythons_support():
    """numpy 2.3 dropped Python 3.10: a 3.10 pin at or above it is the ResolutionImpossible seen on JetPack 6."""
    major_minor = tuple(int(part) for part in read_pins("3.10")["numpy"].split(".")[:2])
    assert major_minor < (2, 3)


def interpreter(version: str) -> str | None:
    """A working ``python3.X`` with venv and ensurepip (what bootstrap.sh needs), or None.

    Looks on PATH, then among pyenv's installed versions (its shims run only the selected ones).
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python{version}")] + sorted(pyenv.glob(f"{version}.*/bin/python{version}"))
    for path in filter(None, candidates):
        probe = subprocess.run([str(path), "-c", "import ensurepip, sys, venv; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return str(path)
    return None


def registry_reachable() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pip"],
                           capture_output=True, text=True, timeout=60)
    return probe.returncode == 0


def dry_run(python: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in {"ROS_DISTRO", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env.update(PYTHON=python, RESOLVER_PYTHON=sys.executable)
    return subprocess.run(["bash", str(BOOTSTRAP), "--dry-run"], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def resolutions():
    """bootstrap.sh --dry-run for each Python found here, all at once (each ~20 s, mostly waiting on I/O)."""
    found = {version: interpreter(version) for version in RESOLVED_HERE}
    results = {version: f"no python{version} with venv here" for version, path in found.items() if path is None}
    runnable = {version: path for version, path in found.items() if path}
    if runnable and not registry_reachable():
        return dict.fromkeys(RESOLVED_HERE, "the package registry is unreachable")
    with ThreadPoolExecutor(max(1, len(runnable))) as pool:
        runs = {version: pool.submit(dry_run, path) for version, path in runnable.items()}
        results.update({version: run.result() for version, run in runs.items()})
    return results


@pytest.mark.slow
@pytest.mark.parametrize("version", RESOLVED_HERE)
def test_pinned_set_resolves(resolutions, version):
    result = resolutions[version]
    if isinstance(result, str):
        pytest.skip(result)
    assert result.returncode == 0, f"Python {version}: the pinned set does not resolve:\n{result.stderr[-3000:]}"
    resolved = {normalize(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(result.stdout)["install"]}
    pins = read_pins(version)
    assert resolved["numpy"] == pins["numpy"]
    unpinned = {name: resolved[name] for name in set(resolved) - set(pins) - UNPINNED_OK}
    assert not unpinned, f"Python {version} resolves packages its constraints file does not pin: {unpinned}"
