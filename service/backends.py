"""The names of the inference backends, which settings validate without importing torch.

What each one runs, and what `auto` picks, is service.model.runtime's business.
"""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["auto", "onnxruntime", "torchscript", "eager"]
BACKENDS: tuple[str, ...] = get_args(Backend)
