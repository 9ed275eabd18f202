"""Export: a checkpoint becomes a verified store entry with measured metrics, lineage and a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data.synthetic import generate_synthetic
from distill.export_stored import demote_headings
from distill.runs import LAST, Runtime, TrainConfig
from distill.train import Trainer
from service.model import ModelStore, Predictor
from tests.test_evaluate import square_frames, write_davis

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real training steps on a tiny synthetic set, saved as a run's last.pt."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, num_sequences=2, frames_per_sequence=4, seed=3, size=(64, 96), split="train")
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(data=[("davis", str(root))], input_size=(64, 64), batch=2, steps=2, warmup=1, seed=5)
    torch.set_num_threads(1)
    Trainer(config, Runtime(run, save_every=100, progress=False)).run()
    return run / LAST


def vsod_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_export_writes_a_verified_model_with_measured_report(checkpoint: Path, tmp_path: Path) -> None:
    store_root, eval_root = tmp_path / "store", write_davis(tmp_path / "davis")
    done = vsod_train("export", "--checkpoint", str(checkpoint), "--name", "tiny", "--store", str(store_root),
                      "--eval-root", str(eval_root), "--eval-dataset", "davis", "--eval-split", "val",
                      "--speed-frames", "3", "--notes", "Two steps, for tests.", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "exported tiny@" in done.stdout

    store = ModelStore(store_root)
    model, manifest = store.load("tiny")  # verifies the weights' sha256 against the manifest
    assert manifest.input_size == (64, 64) and manifest.architecture == "stkd-student"
    assert manifest.config == model.config.to_dict() and len(manifest.sha256) == 64
    metrics = manifest.metrics
    for key in ("s_measure", "max_f", "mean_e", "mae"):
        assert 0.0 <= metrics[key] <= 1.0
        assert metrics[key] == metrics["eval"]["student"][key]
        assert 0.0 <= metrics["eval"]["baselines"]["framediff"][key] <= 1.0
    assert metrics["eval"]["student"]["sequences"] == 2 and metrics["eval"]["student"]["frames_scored"] == 8
    assert metrics["speed"]["cpu_ms_per_frame"] > 0 and metrics["speed"]["cpu_threads"] == 2
    assert metrics["speed"]["input_size"] == [64, 64]
    lineage = manifest.lineage
    assert lineage["steps"] == 2 and lineage["seed"] == 5 and lineage["training_seconds"] > 0
    assert lineage["data"][0]["sequences"] == 2 and lineage["data"][0]["frames"] == 8
    assert "commands" in lineage and "export" in lineage and "commit" in lineage["git"]

    report = (store_root / "tiny" / "report.md").read_text()
    for needle in ("Two steps, for tests.", "## Training", "## Evaluation", "## Speed", "## Machine", "frame difference",
                   "vsod-train eval --dataset davis", manifest.sha256, str(metrics["speed"]["cpu_ms_per_frame"])[:3],
                   f"{metrics['s_measure']:.4f}", f"{metrics['eval']['baselines']['framediff']['s_measure']:.4f}"):
        assert needle in report, needle

    # The streaming step is exported beside the weights, checked against eager, and named in the report.
    graph = manifest.step_graph
    assert graph["file"] == "step.onnx" and graph["max_probability_error"] <= 1e-3 and graph["sha256"] in report

    # The stored model runs: masks at each frame's own size, and ONNX Runtime streams what eager streams.
    predictor = Predictor(model, manifest, device="cpu")
    frames, _ = square_frames(4)
    masks = list(predictor.predict_clip(frames))
    assert len(masks) == 4 and all(m.shape == frames[0].shape[:2] and m.dtype == np.uint8 for m in masks)
    graph_predictor = Predictor.from_store("tiny", store, device="cpu", backend="onnxruntime")
    carried = None
    for frame, mask in zip(frames, masks, strict=True):
        streamed, carried = graph_predictor.step(frame, carried)
        assert np.abs(streamed.astype(int) - mask.astype(int)).max() <= 1

    again = vsod_train("export", "--checkpoint", str(checkpoint), "--name", "tiny", "--store", str(store_root))
    assert again.returncode == 1 and "already exists" in again.stderr
    manifest_after = json.loads((store_root / "tiny" / "manifest.json").read_text())
    assert manifest_after["sha256"] == manifest.sha256  # a refused export leaves the model untouched


def test_export_graph_adds_the_step_to_a_stored_model(checkpoint: Path, tmp_path: Path) -> None:
    """A model stored without its graph (an older export) gets one; an unknown model is one line, exit 1."""
    done = vsod_train("export", "--checkpoint", str(checkpoint), "--name", "old", "--store", str(tmp_path),
                      "--speed-frames", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    manifest_path = tmp_path / "old" / "manifest.json"
    old = json.loads(manifest_path.read_text())
    old.pop("step_graph")
    manifest_path.write_text(json.dumps(old))
    (tmp_path / "old" / "step.onnx").unlink()
    added = vsod_train("export-graph", "old", "--store", str(tmp_path))
    assert added.returncode == 0 and "wrote step.onnx" in added.stdout, added.stderr
    _, manifest = ModelStore(tmp_path).load("old")
    assert manifest.sha256 == old["sha256"] and manifest.step_graph["format"] == "onnx opset 17"
    missing = vsod_train("export-graph", "nope", "--store", str(tmp_path))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "model 'nope' not found" in missing.stderr


def test_a_stored_model_is_exported_again_at_another_input_size(checkpoint: Path, tmp_path: Path) -> None:
    """--from-model: the same weights at a new size; the graph, speed and evaluation are measured again,
    the lineage names the source, and the source's report follows the new measurements."""
    source_store, release, eval_root = tmp_path / "source", tmp_path / "release", write_davis(tmp_path / "davis")
    done = vsod_train("export", "--checkpoint", str(checkpoint), "--name", "tiny", "--store", str(source_store),
                      "--version", "1", "--speed-frames", "1", "--notes", "The source.", "--no-progress")
    assert done.returncode == 0, done.stderr
    _, source = ModelStore(source_store).load("tiny")
    done = vsod_train("export", "--from-model", "tiny", "--from-store", str(source_store), "--input-size", "96",
                      "--name", "tiny", "--version", "2", "--store", str(release), "--eval-root", str(eval_root),
                      "--eval-split", "val", "--speed-frames", "2", "--notes", "Served larger.", "--no-progress")
    assert done.returncode == 0, done.stderr
    _model, manifest = ModelStore(release).load("tiny")
    assert manifest.sha256 == source.sha256 and manifest.version == "2" and manifest.input_size == (96, 96)
    assert manifest.metrics["speed"]["input_size"] == [96, 96] and manifest.metrics["eval"]["student"]["sequences"] == 2
    assert manifest.step_graph["inputs"]["frames"] == ["batch", 3, 96, 96]
    assert manifest.step_graph["sha256"] != source.step_graph["sha256"]  # exported again, at the new size
    assert manifest.lineage["source_model"]["version"] == "1" and manifest.lineage["source_model"]["input_size"] == [64, 64]
    assert manifest.lineage["steps"] == source.lineage["steps"] and "--from-model" in manifest.lineage["export"]["command"]
    report = (release / "tiny" / "report.md").read_text()
    assert report.index("Served larger.") < report.index("## Evaluation") < report.index("### Training")
    assert "The source." in report and "version 1" in report and f"{manifest.metrics['s_measure']:.4f}" in report

    refused = vsod_train("export", "--from-model", "tiny", "--from-store", str(source_store), "--name", "other",
                         "--store", str(release))
    assert refused.returncode == 1 and "--from-model needs --input-size" in refused.stderr
    both = vsod_train("export", "--from-model", "tiny", "--checkpoint", str(checkpoint), "--name", "x")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_a_nested_report_keeps_its_code_blocks() -> None:
    """A source report's headings go one level down; a shell comment inside a fenced block does not."""
    source = "## Training\n\n```bash\n# resumed after a restart\nvsod-train train\n```\n\n### Speed\n#hashtag"
    assert demote_headings(source) == (
        "### Training\n\n```bash\n# resumed after a restart\nvsod-train train\n```\n\n#### Speed\n#hashtag")


def test_export_without_evaluation_still_measures_speed(checkpoint: Path, tmp_path: Path) -> None:
    done = vsod_train("export", "--checkpoint", str(checkpoint), "--name", "plain", "--store", str(tmp_path),
                      "--speed-frames", "2", "--no-progress")
    assert done.returncode == 0, done.stderr
    _, manifest = ModelStore(tmp_path).load("plain")
    assert "s_measure" not in manifest.metrics and manifest.metrics["speed"]["cpu_ms_per_frame"] > 0
    assert "Not evaluated" in (tmp_path / "plain" / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--checkpoint", "{missing}", "--name", "x"], "checkpoint not found"),
        (["--checkpoint", "{ckpt}", "--name", "x", "--eval-root", "{missing}"], "not found"),
    ],
)
def test_cli_export_errors_are_one_line(args: list[str], needle: str, checkpoint: Path, tmp_path: Path) -> None:
    args = [a.format(missing=tmp_path / "missing", ckpt=checkpoint) for a in args]
    done = vsod_train("export", "--store", str(tmp_path / "store"), *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsod-train export:") and needle in lines[0], done.stderr
    assert not (tmp_path / "store" / "x").exists()


def test_the_report_names_the_real_teacher_and_every_source(tmp_path: Path) -> None:
    """A labelled root's sidecar (teacher, sources) and a composite root's (cut-outs, backgrounds) reach
    the lineage through root_provenance, and the report names them with the teacher's hash and licences."""
    from distill.data.provenance import root_provenance
    from distill.export import data_sources

    teacher = {"name": "isnet", "variant": "medium", "sha256": "ab" * 32, "input_size": 1024, "model": "ISNet",
               "model_licence": "MIT", "package": "npm pkg@1", "package_licence": "AGPL-3.0"}
    labelled, composites = tmp_path / "real", tmp_path / "composites"
    labelled.mkdir()
    composites.mkdir()
    (labelled / "labels.json").write_text(json.dumps({"format": "vsod-labels/1", "teacher": teacher, "sequences": {
        "clip": {"source": "/videos/clip.avi"}, "photo": {"source": "/photos/photo.jpg"}}}))
    style = {"object_size": [0.06, 0.45], "defocus_share": 0.4}
    (composites / "composites.json").write_text(json.dumps({"train-s1": {
        "cutouts": str(labelled), "objects": ["photo/00000"], "backgrounds": ["/walls/a.png", "/walls/b.png"]},
        "train-s2": {"cutouts": str(labelled), "objects": ["photo/00000"], "backgrounds": ["/walls/a.png"],
                     "style": style}}))
    assert root_provenance(labelled) == {"teacher": teacher, "sources": ["/photos/photo.jpg", "/videos/clip.avi"]}
    assert root_provenance(composites) == {"cutouts": [str(labelled)], "backgrounds": ["/walls/a.png", "/walls/b.png"],
                                           "styles": [style], "teacher": teacher}
    assert root_provenance(tmp_path / "synthetic") == {}

    data = [{"root": str(root), **root_provenance(root)} for root in (labelled, composites, tmp_path / "synthetic")]
    text = "\n".join(data_sources(data))
    for needle in ("/videos/clip.avi", "/photos/photo.jpg", "/walls/b.png", "ab" * 32, "MIT", "AGPL-3.0", "npm pkg@1",
                   "objects 0.06-0.45 of the short side, 40% of clips defocused"):
        assert needle in text, needle
    assert text.count("- teacher:") == 1  # named once, however many roots it labelled
