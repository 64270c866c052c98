"""The `trainmon` distribution: a wheel built from the tree installs into a fresh venv and imports there.

The wheel must hold every `.py` under exporter/ and metadata_api/ (a sub-package missing from `packages` in
pyproject.toml is caught here); `from trainmon.exporter import TrainingMonitor` works from a directory outside
the repository, both from the wheel and from the editable install the development venv uses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"exporter": "trainmon/exporter", "metadata_api": "trainmon/metadata_api"}
IMPORT_CHECK = ("import trainmon.exporter as e; from trainmon.exporter import TrainingMonitor; "
                "print(e.__file__)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tree (the checkout is left untouched)."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = out.glob("trainmon-*.whl")
    return built


def test_wheel_holds_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"{directory}/{path.relative_to(REPO / directory)}"
               for directory, target in PACKAGES.items()
               for path in (REPO / directory).rglob("*.py")
               if "__pycache__" not in path.parts
               and f"{target}/{path.relative_to(REPO / directory).as_posix()}" not in names]
    assert not missing, f"not in the wheel (add the sub-package to [tool.setuptools] packages): {missing}"
    assert not any(name.startswith("trainmon/__init__") for name in names)  # namespace package


def test_wheel_installs_in_a_fresh_venv_and_imports_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    check = subprocess.run([str(python), "-c", IMPORT_CHECK], cwd=outside, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr
    assert str(env_dir) in check.stdout and str(REPO) not in check.stdout
    fastapi = subprocess.run([str(python), "-c", "import fastapi"], cwd=outside, capture_output=True, timeout=60)
    assert fastapi.returncode != 0, "the exporter's own install must stay light (FastAPI only with [server])"
    command = subprocess.run([str(env_dir / "bin" / "trainmon"), "--help"], cwd=outside, capture_output=True,
                             text=True, timeout=60)
    assert command.returncode == 0 and "trainmon" in command.stdout, command.stdout + command.stderr


def test_development_install_imports_outside_the_repo(tmp_path: Path) -> None:
    check = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr
    assert Path(check.stdout.strip()).parent == REPO / "exporter"
