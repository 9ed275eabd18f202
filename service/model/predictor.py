"""Frames in, masks out: the student wrapped with pre/post-processing and explicit stream state.

    mask, state = predictor.step(frame, state)        # live streams, one frame at a time
    masks, states = predictor.step_batch(frames, states)  # many sessions in one forward pass
    for mask in predictor.predict_clip(frames): ...     # offline clips, batched in chunks

All three run the same network on the same pairing (frame t with frame t-1, the first frame with
itself), so a clip gives the same masks whichever path processes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .processing import frames_to_tensor, probabilities_to_masks, probability_to_mask
from .runtime import StepRuntime
from .state import StreamState
from .store import Manifest, ModelStore
from .student import STKDStudent


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """`optimize=True` runs stream steps through `StepRuntime`'s optimised path (a frozen TorchScript
    graph on CPU, float16 on CUDA; within 1e-3 of eager in probability); clips always run eager, so
    `predict_clip` and clip jobs stay bit-identical to the reference model."""

    def __init__(
        self, model: STKDStudent, manifest: Manifest, device: str | torch.device | None = None, optimize: bool = False
    ) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.model = model.eval().to(self.device)
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.input_size = manifest.input_size
        self.runtime = StepRuntime(self.model, self.device, tuple(self.input_size), optimize)

    @classmethod
    def from_store(
        cls, name: str, store: ModelStore | None = None, device: str | None = None, optimize: bool = False
    ) -> Predictor:
        model, manifest = (store or ModelStore()).load(name)
        return cls(model, manifest, device, optimize)

    def new_state(self) -> StreamState:
        return StreamState(self.model_id, self.input_size)

    def load_state(self, data: bytes) -> StreamState:
        """Parse state bytes, refusing one made by another model or for another input size."""
        return StreamState.from_bytes(data, model_id=self.model_id, input_size=self.input_size)

    def step_batch(
        self, frames: Sequence[np.ndarray], states: Sequence[StreamState | None]
    ) -> tuple[list[np.ndarray], list[StreamState]]:
        """One frame for each of several streams; a None state starts a new stream; masks at each frame's size."""
        probabilities, new_states = self.infer_batch(frames, states)
        return [probability_to_mask(p, f.shape[:2]) for p, f in zip(probabilities, frames)], new_states

    @torch.inference_mode()
    def infer_batch(
        self, frames: Sequence[np.ndarray], states: Sequence[StreamState | None]
    ) -> tuple[np.ndarray, list[StreamState]]:
        """`step_batch` up to the probabilities (B, h, w float32 at the model's output size): the
        network's part, which the engine runs on its model thread; masks are made elsewhere."""
        if len(frames) != len(states):
            raise ValueError("step_batch needs one state per frame")
        if not frames:
            return np.zeros((0, *self.input_size), np.float32), []
        states = [state or self.new_state() for state in states]
        for state in states:
            if state.model_id != self.model_id or tuple(state.input_size) != tuple(self.input_size):
                raise ValueError(f"a stream state for {state.model_id} at {state.input_size} cannot feed {self.model_id}")
        batch = frames_to_tensor(frames, self.input_size).to(self.device)
        previous, fresh = self._previous_tensor(states)
        logits, state_tensor = self.runtime(batch, previous, fresh)
        probabilities = torch.sigmoid(logits).float().cpu().numpy()[:, 0]
        features = state_tensor.cpu().numpy()
        new_states = [
            StreamState(self.model_id, self.input_size, state.frame_index + 1, features[i].copy())
            for i, state in enumerate(states)
        ]
        return probabilities, new_states

    def step(self, frame: np.ndarray, state: StreamState | None = None) -> tuple[np.ndarray, StreamState]:
        masks, states = self.step_batch([frame], [state])
        return masks[0], states[0]

    def predict_image(self, frame: np.ndarray) -> np.ndarray:
        """A single still image: a stream of one frame."""
        return self.step(frame)[0]

    @torch.inference_mode()
    def predict_clip(self, frames: Iterable[np.ndarray], chunk: int = 8) -> Iterator[np.ndarray]:
        """Masks for a clip in order, `chunk` frames per forward pass, the state carried across chunks."""
        previous: Tensor | None = None
        pending: list[np.ndarray] = []
        for frame in frames:
            pending.append(frame)
            if len(pending) == chunk:
                masks, previous = self._clip_chunk(pending, previous)
                yield from masks
                pending = []
        if pending:
            masks, _ = self._clip_chunk(pending, previous)
            yield from masks

    def _clip_chunk(self, frames: list[np.ndarray], previous: Tensor | None) -> tuple[list[np.ndarray], Tensor]:
        clip = frames_to_tensor(frames, self.input_size).to(self.device).unsqueeze(0)
        output = self.model.forward_clip(clip, previous)
        masks = probabilities_to_masks(torch.sigmoid(output.logits), [f.shape[:2] for f in frames])
        return masks, output.state[-1:]

    def _previous_tensor(self, states: Sequence[StreamState]) -> tuple[Tensor | None, Tensor | None]:
        """Stack the streams' previous features; rows of streams at their first frame are flagged fresh."""
        if all(state.features is None for state in states):
            return None, None
        shape = next(state.features.shape for state in states if state.features is not None)
        stacked = np.stack([state.features if state.features is not None else np.zeros(shape, np.float32) for state in states])
        fresh = torch.tensor([state.features is None for state in states], device=self.device)
        return torch.from_numpy(stacked).to(self.device), (fresh if bool(fresh.any()) else None)
