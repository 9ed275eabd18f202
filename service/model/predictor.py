"""Frames in, masks out: the student wrapped with pre/post-processing and explicit carried state.

    mask, carried = predictor.step(frame, carried)            # live streams, one frame at a time
    masks, carried = predictor.step_batch(frames, carried)    # many sessions in one forward pass
    for mask in predictor.predict_clip(frames): ...          # offline clips, batched in chunks

All three run the same network on the same pairing (frame t with frame t-1, the first frame with
itself), so a clip gives the same masks whichever path processes it.

What a stream carries from one frame to the next is this module's business alone: a dict of named
float32 arrays (`Carried`; today {"features": the previous frame's projected stride-32 tensor}),
empty or None before the first frame. Whoever stores it (service/live/) stores any such dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .processing import frames_to_tensor, probabilities_to_masks, probability_to_mask, resize_image
from .runtime import Backend, StepRuntime
from .store import Manifest, ModelStore
from .student import STKDStudent

Carried = dict[str, np.ndarray]


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Stream steps run through `StepRuntime`'s `backend` (eager by default; the server's default
    `auto` picks ONNX Runtime or TorchScript, each within 1e-3 of eager in probability); clips always
    run eager, so `predict_clip` and clip jobs stay bit-identical to the reference model. `graph` is
    the model's verified step graph, which the onnxruntime backend runs."""

    def __init__(
        self, model: STKDStudent, manifest: Manifest, device: str | torch.device | None = None,
        backend: Backend = "eager", graph: Path | None = None, threads: int | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.model = model.eval().to(self.device)
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.input_size = manifest.input_size
        self.runtime = StepRuntime(self.model, self.device, self.input_size, backend, graph, threads)

    @property
    def backend(self) -> str:
        """What runs stream steps: eager, torchscript, cuda-fp16 or onnxruntime-<provider>."""
        return self.runtime.mode

    @classmethod
    def from_store(
        cls, name: str, store: ModelStore | None = None, device: str | None = None, backend: Backend = "eager",
        threads: int | None = None,
    ) -> Predictor:
        store = store or ModelStore()
        model, manifest = store.load(name)
        return cls(model, manifest, device, backend, store.step_graph(name, manifest), threads)

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """A frame resized to the model's input, as `infer_batch` would resize it (callers that do
        it on their own thread spare the model's thread the work)."""
        return resize_image(frame, self.input_size)

    @staticmethod
    def mask(probability: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A probability map from `infer_batch` -> the uint8 mask at the frame's (height, width)."""
        return probability_to_mask(probability, size)

    @torch.inference_mode()
    def infer_batch(
        self, frames: Sequence[np.ndarray], carried: Sequence[Carried | None]
    ) -> tuple[np.ndarray, list[Carried]]:
        """One frame for each of several streams, with what each stream carried from its previous
        frame (None or empty: a first frame) -> (probabilities B,h,w float32 at the model's output
        size, what each stream carries to its next frame). The network's part: masks are made elsewhere."""
        if len(frames) != len(carried):
            raise ValueError("infer_batch needs one carried state per frame")
        if not frames:
            return np.zeros((0, *self.input_size), np.float32), []
        batch = frames_to_tensor(frames, self.input_size).to(self.device)
        previous, fresh = self._previous_tensor([(c or {}).get("features") for c in carried])
        logits, state_tensor = self.runtime(batch, previous, fresh)
        probabilities = torch.sigmoid(logits).float().cpu().numpy()[:, 0]
        features = state_tensor.cpu().numpy()
        return probabilities, [{"features": features[i].copy()} for i in range(len(frames))]

    def step_batch(self, frames: Sequence[np.ndarray],
                   carried: Sequence[Carried | None]) -> tuple[list[np.ndarray], list[Carried]]:
        """One frame for each of several streams -> masks at each frame's size, and what each carries on."""
        probabilities, new = self.infer_batch(frames, carried)
        return [self.mask(p, f.shape[:2]) for p, f in zip(probabilities, frames, strict=True)], new

    def step(self, frame: np.ndarray, carried: Carried | None = None) -> tuple[np.ndarray, Carried]:
        """One frame of one stream -> its mask at the frame's size and what the next frame needs."""
        masks, new = self.step_batch([frame], [carried])
        return masks[0], new[0]

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
                masks, previous = self.clip_chunk(pending, previous)
                yield from masks
                pending = []
        if pending:
            masks, _ = self.clip_chunk(pending, previous)
            yield from masks

    @torch.inference_mode()
    def clip_chunk(self, frames: list[np.ndarray], previous: Tensor | None) -> tuple[list[np.ndarray], Tensor]:
        """Consecutive frames of one clip in one forward pass (eager, the reference path) -> their masks
        and the state for the next chunk. Clip jobs run exactly this, so they equal `predict_clip`."""
        clip = frames_to_tensor(frames, self.input_size).to(self.device).unsqueeze(0)
        output = self.model.forward_clip(clip, previous)
        masks = probabilities_to_masks(torch.sigmoid(output.logits), [f.shape[:2] for f in frames])
        return masks, output.state[-1:]

    def _previous_tensor(self, features: Sequence[np.ndarray | None]) -> tuple[Tensor | None, Tensor | None]:
        """Stack the streams' previous features; rows of streams at their first frame are flagged fresh."""
        if all(f is None for f in features):
            return None, None
        shape = next(f.shape for f in features if f is not None)
        stacked = np.stack([f if f is not None else np.zeros(shape, np.float32) for f in features])
        fresh = torch.tensor([f is None for f in features], device=self.device)
        return torch.from_numpy(stacked).to(self.device), (fresh if bool(fresh.any()) else None)
