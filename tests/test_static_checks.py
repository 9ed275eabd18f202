"""The code passes its linter and its type checker, with the rule set and settings in pyproject.toml.

Both run as the developer would run them (`ruff check .`, `mypy service distill bench`), so a finding fails
the suite with the tool's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=600)


def test_ruff_finds_nothing() -> None:
    done = check("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_service_distill_and_bench() -> None:
    done = check("mypy", "service", "distill", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A file with an unused import and a type error is caught by each tool: neither check is vacuous."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef half(x: int) -> str:\n    return x / 2\n")
    assert check("ruff", "check", "--no-cache", str(bad)).returncode == 1
    assert check("mypy", "--no-incremental", str(bad)).returncode == 1
