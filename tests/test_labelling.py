"""`vsod-train fetch-teacher` and `vsod-train label`: the real-image teacher's labels on a real video.

The real ISNet graph is 88 MB from npm and takes ~11 s a frame here, so these tests run the labelling
code on a stand-in ONNX graph with ISNet's exact interface (1x3x1024x1024 `input` -> 1x1x1024x1024
`output`), registered under a test variant with its own hash. Everything else is the real path:
onnxruntime, the video decode, the DAVIS layout, the loaders, the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from distill.cli import main as train_cli
from distill.data.loaders import load_davis
from distill.teachers import isnet
from distill.teachers.isnet import IsnetTeacher
from distill.teachers.labelling import label_sources

REPO = Path(__file__).resolve().parents[1]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
needs_vtest = pytest.mark.skipif(not VTEST.is_file(), reason="Debian's opencv-doc sample vtest.avi is not installed")


def stand_in_graph(path: Path) -> None:
    """sigmoid(8 * (mean(x) - 0.1)) of x = RGB/255 - 0.5: bright pixels are 'salient'; ISNet's names, shapes, range."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [8.0 / 3] * 3)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1], [-0.8])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["output"])],
        "stand-in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, isnet.INPUT_SIZE, isnet.INPUT_SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, isnet.INPUT_SIZE, isnet.INPUT_SIZE])],
        initializer=[weight, bias],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture
def stand_in_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "teachers"
    cache.mkdir()
    monkeypatch.setenv("VSOD_TEACHER_CACHE", str(cache))
    monkeypatch.setitem(isnet.VARIANTS, "medium", "")
    path = isnet.model_path("medium")
    stand_in_graph(path)
    monkeypatch.setitem(isnet.VARIANTS, "medium", isnet.sha256_of(path))
    return path


def run_cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO, timeout=300, check=False)


def test_missing_teacher_is_one_line_and_nonzero(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(b"")  # never read: the teacher is checked first
    result = run_cli("label", str(image), "--out", str(tmp_path / "out"), env={"VSOD_TEACHER_CACHE": str(tmp_path / "empty")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "vsod-train fetch-teacher isnet" in lines[0] and "Traceback" not in result.stderr


def test_fetch_without_npm_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = run_cli("fetch-teacher", "isnet", env={"VSOD_TEACHER_CACHE": str(tmp_path), "PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "npm is not installed" in result.stderr, result.stderr


def test_corrupt_cached_teacher_is_refused(stand_in_teacher: Path, tmp_path: Path) -> None:
    stand_in_teacher.write_bytes(stand_in_teacher.read_bytes() + b"x")
    with pytest.raises(isnet.TeacherUnavailableError, match="does not match its hash"):
        isnet.load_isnet("medium")


def test_teacher_maps_frames_at_their_own_size(stand_in_teacher: Path) -> None:
    teacher = isnet.load_isnet("medium", threads=1)
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[30:60, 40:120] = 255
    saliency = teacher.predict(frame)
    assert saliency.shape == (90, 160) and saliency.dtype == np.float32
    assert abs(saliency[45, 80] - 0.9608) < 1e-3 and abs(saliency[5, 5] - 0.0082) < 1e-3  # sigmoid(3.2), sigmoid(-4.8)


@needs_vtest
def test_label_vtest_twenty_frames_resumes_after_an_interruption(
        stand_in_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labelled"
    argv = ["label", str(VTEST), "--teacher", "isnet", "--out", str(out), "--max-frames", "20", "--stride", "3",
            "--threads", "1"]
    predict = IsnetTeacher.predict
    calls: list[int] = []

    def interrupted_after_seven(self: IsnetTeacher, frame: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # Ctrl-C while the teacher runs the 8th frame
        return predict(self, frame)

    monkeypatch.setattr(IsnetTeacher, "predict", interrupted_after_seven)
    assert train_cli(argv) == 130
    masks = out / "Annotations" / "480p" / "vtest"
    assert len(list(masks.glob("*.png"))) == 7
    assert len(load_davis(out, "train")[0].masks) == 7  # the list names what was done before the interruption

    calls.clear()
    monkeypatch.setattr(IsnetTeacher, "predict", lambda self, frame: (calls.append(1), predict(self, frame))[1])
    assert train_cli(argv) == 0
    assert len(calls) == 13  # the 7 frames already labelled were skipped
    assert "13 new frames" in capsys.readouterr().out

    (sequence,) = load_davis(out, "train")
    assert [path.stem for path in sequence.frames] == [f"{3 * k:05d}" for k in range(20)]
    assert len(sequence.masks) == 20
    sidecar = json.loads((out / "labels.json").read_text())
    assert sidecar["teacher"]["name"] == "isnet" and sidecar["teacher"]["sha256"] == isnet.VARIANTS["medium"]
    assert "MIT" in sidecar["teacher"]["model_licence"] and "AGPL" in sidecar["teacher"]["package_licence"]
    assert sidecar["sequences"]["vtest"]["source"] == str(VTEST)
    # Soft 8-bit maps, not binarised: the stand-in's sigmoid leaves many grey levels.
    assert len(np.unique(np.asarray(cv2.imread(str(masks / "00000.png"), 0)))) > 10


def test_label_refuses_another_teachers_folder(stand_in_teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "labelled"
    out.mkdir()
    (out / "labels.json").write_text(json.dumps({"format": "vsod-labels/1", "teacher": {"sha256": "0" * 64}, "sequences": {}}))
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 200, np.uint8))
    with pytest.raises(ValueError, match="another teacher"):
        label_sources([image], out)


def upsampling_graph(path: Path) -> None:
    """ISNet's pattern in small: pool to half, then `Resize` to a size the export fixed (1024, concatenated
    to the input's batch and channels), then a 1x1 conv to one channel and a sigmoid."""
    shape = [1, 3, isnet.INPUT_SIZE, isnet.INPUT_SIZE]
    nodes = [
        helper.make_node("MaxPool", ["input"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two"], ["batch_channels"]),
        helper.make_node("Constant", [], ["fixed"], value=helper.make_tensor("v", TensorProto.INT64, [2], [1024, 1024])),
        helper.make_node("Concat", ["batch_channels", "fixed"], ["sizes"], axis=0),
        helper.make_node("Resize", ["pooled", "", "", "sizes"], ["upsampled"], mode="linear"),
        helper.make_node("Conv", ["upsampled", "w", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["output"]),
    ]
    initializers = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                    helper.make_tensor("two", TensorProto.INT64, [1], [2]),
                    helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [8.0 / 3] * 3),
                    helper.make_tensor("b", TensorProto.FLOAT, [1], [-0.8])]
    graph = helper.make_graph(nodes, "upsampling", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, *shape[2:]])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_the_teacher_runs_at_other_sizes_once_its_fixed_upsampling_becomes_scales(tmp_path: Path) -> None:
    """As exported, the graph's upsampling always makes 1024x1024, whatever comes in; rewritten, it makes
    twice what the pooling left, so a 512 input gives a 512 map, and at 1024 nothing changes."""
    import onnxruntime

    path = tmp_path / "upsampling.onnx"
    upsampling_graph(path)
    original = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rewritten = onnxruntime.InferenceSession(isnet.any_size_graph(path), providers=["CPUExecutionProvider"])
    big = np.random.default_rng(0).random((1, 3, 1024, 1024), np.float32) - 0.5
    assert np.array_equal(original.run(None, {"input": big})[0], rewritten.run(None, {"input": big})[0])
    small = np.ascontiguousarray(big[:, :, ::2, ::2])
    # onnxruntime raises its own InvalidArgument (the class's module path is private): match the message.
    with pytest.raises(Exception, match="Got: 512 Expected: 1024"):  # the fixed 1024 output no longer matches
        original.run(None, {"input": small})
    (saliency,) = rewritten.run(None, {"input": small})
    assert saliency.shape == (1, 1, 512, 512) and 0 < saliency.min() < saliency.max() < 1


def test_labels_at_one_teacher_size_are_not_mixed_with_another(stand_in_teacher: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 200, np.uint8))
    out = tmp_path / "labelled"
    assert label_sources([image], out, progress=False, teacher_size=512) == {"photo": 1}
    assert json.loads((out / "labels.json").read_text())["teacher"]["input_size"] == 512
    with pytest.raises(ValueError, match=r"another teacher .* at 512"):
        label_sources([image], out, progress=False)
    result = run_cli("label", str(image), "--out", str(tmp_path / "other"), "--teacher-size", "100",
                     env={"VSOD_TEACHER_CACHE": str(stand_in_teacher.parent)})
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "multiple of 64" in result.stderr, result.stderr
