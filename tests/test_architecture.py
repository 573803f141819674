"""The layering rules of pyproject.toml's import-linter contracts hold for the tree as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
