"""The documentation site builds with `mkdocs build --strict`: every page in the nav, no broken link or anchor
(`validation` in mkdocs.yml), every included file present (docs/development.md includes DEVELOPERS.md).

mkdocs and mkdocs-material come with the `dev` extra; without them this test fails rather than skips, so a broken
site never passes `make test`. README.md is not part of the site: its links to the pages are checked apart."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from support.docs import REPO


def test_mkdocs_build_strict_succeeds(tmp_path: Path) -> None:
    for module in ("mkdocs", "material"):
        assert importlib.util.find_spec(module), f"{module} is not installed: pip install -e '.[dev]'"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                             "-d", str(tmp_path / "site")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    development = (tmp_path / "site" / "development" / "index.html").read_text(encoding="utf-8")
    assert "Where a change goes" in development, "DEVELOPERS.md was not included in the Development page"


def test_readme_links_to_existing_pages() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", readme)
    assert targets, "README links no docs page"
    missing = [target for target in targets if not (REPO / target).is_file()]
    assert not missing, f"README links missing files: {missing}"

