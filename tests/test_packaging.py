"""The `trainmon` distribution: a wheel built from the tree installs into a fresh venv and imports there.

The wheel (`python -m build` of the whole checkout) must hold every `.py` under common/, exporter/, client/ and
metadata_api/ (a sub-package missing from `packages` in pyproject.toml is caught here) and nothing of the
repository's own tooling (devtools/: demo, stack renderer, NVML replay; tests/; bench/);
`from trainmon.exporter import TrainingMonitor` works from a directory outside the repository, both from the
wheel and from the editable install the development venv uses.
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
PACKAGES = {"common": "trainmon/common", "exporter": "trainmon/exporter", "client": "trainmon/client",
            "metadata_api": "trainmon/metadata_api", "integrations": "trainmon/integrations"}
NOT_SHIPPED = ("devtools", "tests", "bench", "nvml_replay", "demo.py", "stack_render", "procs.py", "conftest")
IMPORT_CHECK = ("import trainmon.exporter as e; from trainmon.exporter import TrainingMonitor; "
                "print(e.__file__)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built by `python -m build` from a copy of the whole checkout (which is left untouched)."""
    source = tmp_path_factory.mktemp("source") / "trainmon"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".venv", ".git",
                                    "node_modules", "site", "demo-data", "experiments", ".ruff_cache",
                                    ".pytest_cache")
    shutil.copytree(REPO, source, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
                             str(source)], capture_output=True, text=True, timeout=300)
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


def test_wheel_ships_no_repository_tooling(wheel: Path) -> None:
    names = [name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name]
    assert all(name.startswith("trainmon/") for name in names), names
    leaked = [name for name in names if any(part in name for part in NOT_SHIPPED)]
    assert not leaked, f"repository tooling in the wheel: {leaked}"


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
