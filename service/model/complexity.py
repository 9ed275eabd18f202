"""Measured model size and cost: parameters and FLOPs per frame.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts convolutions and matrix
products (a multiply-add counts 2, the convention of the paper's budget; it checks this in
`tests/test_cli.py`) and nothing elementwise (normalisation, activations, resizing), as is usual.
A frame is counted in the streaming steady state: the student receives a previous-frame state, so
the inter-frame (co-attention) encoding is included, exactly as every frame after the first pays it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """All parameters (trainable or not); buffers such as batch-norm statistics are not counted."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, int] = (352, 352)) -> int:
    """FLOPs of one frame of (height, width), the inter-frame encoding included.

    For the STKD student the frame is paired with a previous-frame state of the right shape; any
    other module (a teacher later) is called on one frame alone.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    frame = torch.rand(1, 3, *input_size, device=device)
    inputs: tuple[torch.Tensor, ...] = (frame,)
    state_shape = getattr(model, "state_shape", None)
    if callable(state_shape):
        inputs = (frame, torch.rand(1, *state_shape(input_size), device=device))
    try:
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
