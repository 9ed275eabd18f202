"""Device helpers shared by the CUDA tests (tests/test_cuda.py) and bench/gpu_check.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def float32_exact() -> Iterator[None]:
    """TF32 off for convolutions and matmuls (cuDNN uses it for float32 on Ampere and later by default),
    so that float32 on the GPU can be held to float32 on the CPU."""
    import torch  # not at the top: gpu_check.py imports this module before it knows it has a GPU

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
