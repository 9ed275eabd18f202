"""Default locations, importable without torch (settings read them before the model is loaded)."""

from __future__ import annotations

import os
from pathlib import Path


def default_store_root() -> Path:
    """`VSOD_MODEL_STORE`, else `./model_store`, else the store beside this source tree."""
    if env := os.environ.get("VSOD_MODEL_STORE"):
        return Path(env)
    local = Path.cwd() / "model_store"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[1] / "model_store"
