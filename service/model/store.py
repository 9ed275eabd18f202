"""The model store: `model_store/<name>/{manifest.json, weights.safetensors, step.onnx, report.md}`.

The manifest names the architecture, its config, the input size, a version and the weights'
sha256; loading verifies all of it and fails with one clear message (`ModelStoreError`). `step.onnx`
is the streaming step exported for ONNX Runtime (onnx_step.py); the manifest's `step_graph` record
holds its sha256, which `step_graph()` verifies before a server opens it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ..paths import default_store_root
from .onnx_step import STEP_GRAPH, StepGraphError, export_step
from .student import ARCHITECTURE, STKDStudent, StudentConfig

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
REPORT = "report.md"


class ModelStoreError(RuntimeError):
    """A model is missing, incomplete or does not match its manifest."""


@dataclass
class Manifest:
    name: str
    architecture: str
    config: dict[str, Any]
    input_size: tuple[int, int]  # (height, width)
    version: str
    sha256: str
    weights: str = WEIGHTS
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    step_graph: dict[str, Any] = field(default_factory=dict)  # {} when the model has no exported step

    @property
    def model_id(self) -> str:
        """Names these exact weights; stream states carry it so they never cross models."""
        return f"{self.name}@{self.sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            return cls(
                name=data["name"],
                architecture=data["architecture"],
                config=dict(data["config"]),
                input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
                version=str(data["version"]),
                sha256=data["sha256"],
                weights=data.get("weights", WEIGHTS),
                created=data.get("created", ""),
                metrics=data.get("metrics", {}),
                lineage=data.get("lineage", {}),
                step_graph=data.get("step_graph", {}),
            )
        except (KeyError, TypeError, IndexError, ValueError) as error:
            raise ModelStoreError(f"manifest is missing or has a malformed field: {error}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_root()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def manifest(self, name: str) -> Manifest:
        path = self.root / name / MANIFEST
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ModelStoreError(f"model {name!r} not found in {self.root} (available: {known})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ModelStoreError(f"model {name!r}: its {MANIFEST} is not valid JSON: {error}") from None
        manifest = Manifest.from_dict(data)
        if manifest.architecture != ARCHITECTURE:
            raise ModelStoreError(f"model {name!r} has architecture {manifest.architecture!r}, expected {ARCHITECTURE!r}")
        return manifest

    def load(self, name: str, verify: bool = True) -> tuple[STKDStudent, Manifest]:
        """Build the network from the manifest and load its verified weights (in eval mode, on CPU)."""
        manifest = self.manifest(name)
        weights = self.root / name / manifest.weights
        if not weights.is_file():
            raise ModelStoreError(f"model {name!r} has no weights file {manifest.weights!r}")
        if verify and (actual := sha256_of(weights)) != manifest.sha256:
            raise ModelStoreError(
                f"model {name!r}: weights sha256 {actual[:12]}… does not match the manifest's {manifest.sha256[:12]}…"
            )
        try:
            model = STKDStudent(StudentConfig.from_dict(manifest.config))
        except (ValueError, RuntimeError) as error:  # a config value the network cannot be built with
            raise ModelStoreError(f"model {name!r}: {error}") from None
        try:
            model.load_state_dict(load_file(str(weights)))
        except (RuntimeError, ValueError) as error:
            raise ModelStoreError(f"model {name!r}: weights do not fit its config: {error}") from None
        return model.eval(), manifest

    def step_graph(self, name: str, manifest: Manifest) -> Path | None:
        """The model's exported step graph, its hash verified; None when the manifest records none."""
        if not manifest.step_graph:
            return None
        path = self.root / name / manifest.step_graph.get("file", STEP_GRAPH)
        if not path.is_file():
            raise ModelStoreError(f"model {name!r}: its step graph {path.name!r} is missing")
        if sha256_of(path) != manifest.step_graph.get("sha256"):
            raise ModelStoreError(f"model {name!r}: {path.name} does not match the sha256 in its manifest")
        return path

    def save(self, model: STKDStudent, manifest: Manifest, report: str | None = None, step_graph: bool = True) -> Path:
        """Write the weights and (unless `step_graph` is False) the exported step graph, then the
        manifest with their sha256, so a half-written model never verifies."""
        from safetensors.torch import save_file

        folder = self.root / manifest.name
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / manifest.weights
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(weights))
        manifest.sha256 = sha256_of(weights)
        manifest.architecture = ARCHITECTURE
        manifest.config = model.config.to_dict()
        manifest.step_graph = self._export_step(model, manifest, folder) if step_graph else {}
        (folder / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        if report is not None:
            (folder / REPORT).write_text(report)
        return folder

    def add_step_graph(self, name: str) -> dict[str, Any]:
        """Export (or re-export) a stored model's step graph and record it in its manifest."""
        model, manifest = self.load(name)
        manifest.step_graph = self._export_step(model, manifest, self.root / name)
        (self.root / name / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        return manifest.step_graph

    @staticmethod
    def _export_step(model: STKDStudent, manifest: Manifest, folder: Path) -> dict[str, Any]:
        path = folder / STEP_GRAPH
        try:
            record = export_step(model, manifest.input_size, path)
        except StepGraphError as error:
            raise ModelStoreError(f"model {manifest.name!r}: {error}") from None
        return {"file": path.name, "sha256": sha256_of(path), **record}
