"""The README stays true to the code: its settings list is generated, its model figures measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_lists_every_setting_as_the_code_defines_it() -> None:
    assert settings_table() in README, "regenerate the README's settings table: python -m service.settings"


def test_readme_model_figures_match_the_default_models_manifest() -> None:
    manifest = json.loads((ROOT / "model_store" / "vsod-student" / "manifest.json").read_text())
    for key in ("s_measure", "max_f", "mean_e", "mae"):
        assert f"{manifest['metrics'][key]:.4f}" in README, f"README lacks the manifest's {key}"


def test_readme_client_snippet_is_the_one_the_client_tests_run() -> None:
    """tests/test_client.py runs docs/client.md's snippet verbatim; the README shows that same code."""
    snippet = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "client.md").read_text(), re.S)
    assert snippet is not None and snippet.group(1) in README


def test_reliability_table_names_tests_that_exist() -> None:
    """docs/reliability.md says which test holds each answer: every one it names must be there."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)", text))
    assert len(named) > 20, "the table of bad inputs and faults names its tests"
    missing = [f"{file}::{test}" for file, test in sorted(named)
               if not re.search(rf"^(async )?def {test}\b", (ROOT / "tests" / file).read_text(), re.M)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
