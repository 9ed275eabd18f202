"""Evaluation: pysodmetrics under the DAVSOD protocol, the frame-difference baseline, `vsod-train eval`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from py_sod_metrics import Smeasure

from distill.baselines import frame_difference_clip
from distill.data.loaders import load_dataset
from distill.data.sequences import VideoSequence, read_mask
from distill.evaluate import BorderSafeSmeasure, SequenceScorer, evaluate_sequences, scored_frames

REPO = Path(__file__).resolve().parents[1]
SIZE = (72, 96)  # height, width: small, and not the model's input size on purpose


def square_frames(frames: int, size: tuple[int, int] = SIZE, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A bright textured square moving over a darker textured background, and its exact masks."""
    rng = np.random.default_rng(seed)
    height, width = size
    background = rng.integers(20, 90, (height, width, 3), dtype=np.uint8)
    images, masks = [], []
    for t in range(frames):
        image = background.copy()
        mask = np.zeros((height, width), np.uint8)
        top, left = 20 + 2 * t, 15 + 5 * t
        mask[top : top + 24, left : left + 28] = 255
        image[mask > 0] = rng.integers(170, 250, (int((mask > 0).sum()), 3), dtype=np.uint8)
        images.append(image)
        masks.append(mask)
    return images, masks


def write_davis(root: Path, sequences: int = 2, frames: int = 6, split: str = "val",
                annotated: Iterable[int] | None = None) -> Path:
    """A DAVIS-2016 layout: JPEGImages/480p, Annotations/480p, ImageSets/480p/<split>.txt."""
    lines = []
    for s in range(sequences):
        name = f"square{s}"
        images, masks = square_frames(frames, seed=s)
        (root / "JPEGImages/480p" / name).mkdir(parents=True, exist_ok=True)
        (root / "Annotations/480p" / name).mkdir(parents=True, exist_ok=True)
        keep = set(range(frames)) if annotated is None else set(annotated)
        for t, (image, mask) in enumerate(zip(images, masks, strict=True)):
            frame = f"/JPEGImages/480p/{name}/{t:05d}.jpg"
            cv2.imwrite(str(root) + frame, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            if t in keep:
                annotation = f"/Annotations/480p/{name}/{t:05d}.png"
                cv2.imwrite(str(root) + annotation, mask)
                lines.append(f"{frame} {annotation}")
            else:
                lines.append(frame)
    (root / "ImageSets/480p").mkdir(parents=True, exist_ok=True)
    (root / f"ImageSets/480p/{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def oracle(sequences: list[VideoSequence], corrupt_unscored: bool = False):
    """A predictor that returns each sequence's ground truth (zeros where there is none).

    `evaluate_sequences` visits sequences in order, so the oracle walks the same list.
    """
    remaining = iter(sequences)

    def predict(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        sequence = next(remaining)
        scored = set(scored_frames(sequence))
        for index, frame in enumerate(frames):
            if index in sequence.masks and not (corrupt_unscored and index not in scored):
                yield read_mask(sequence.masks[index]).astype(np.uint8) * 255
            else:  # unscored frames get garbage when asked: the protocol must ignore them
                yield np.full(frame.shape[:2], 255 if corrupt_unscored else 0, np.uint8)

    return predict


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_davis(tmp_path_factory.mktemp("davis"))


def test_perfect_prediction_scores_perfectly(davis_root: Path) -> None:
    sequences = load_dataset("davis", davis_root, split="val")
    result = evaluate_sequences(oracle(sequences), sequences, progress=False)
    assert result["mae"] == 0.0
    assert result["s_measure"] == pytest.approx(1.0, abs=1e-6)
    assert result["max_f"] == pytest.approx(1.0, abs=1e-3)
    assert result["mean_e"] == pytest.approx(1.0, abs=5e-3)  # the top threshold leaves no foreground
    assert result["sequences"] == 2
    assert result["frames_scored"] == 2 * (6 - 2)  # first and last frame of each sequence skipped
    assert result["frames_predicted"] == 12
    assert set(result["per_sequence"]) == {"square0", "square1"}


def test_first_last_and_unannotated_frames_are_not_scored(tmp_path: Path) -> None:
    root = write_davis(tmp_path, sequences=1, frames=7, annotated=[0, 2, 3, 6])
    sequences = load_dataset("davis", root, split="val")
    assert scored_frames(sequences[0]) == [2, 3]
    result = evaluate_sequences(oracle(sequences, corrupt_unscored=True), sequences, progress=False)
    assert result["frames_scored"] == 2
    assert result["mae"] == 0.0 and result["s_measure"] == pytest.approx(1.0, abs=1e-6)


def test_a_one_frame_sequence_is_an_image_and_its_frame_is_scored(tmp_path: Path) -> None:
    """Photo sets (a labelled folder of photos, DUTS) are one-frame sequences: skipping first and last
    frames would leave nothing to score."""
    root = write_davis(tmp_path, sequences=3, frames=1)
    sequences = load_dataset("davis", root, split="val")
    assert [scored_frames(sequence) for sequence in sequences] == [[0], [0], [0]]
    result = evaluate_sequences(oracle(sequences), sequences, progress=False)
    assert result["frames_scored"] == 3 and result["s_measure"] == pytest.approx(1.0, abs=1e-6)
    assert result["flicker"] is None  # no two consecutive frames
    unlabelled = write_davis(tmp_path / "unlabelled", sequences=1, frames=1, annotated=[])
    assert scored_frames(load_dataset("davis", unlabelled, split="val")[0]) == []


def test_an_object_on_the_last_row_or_column_has_a_finite_s_measure() -> None:
    """Its centroid split leaves an empty quadrant (weight 0), which pysodmetrics scores NaN."""
    bottom = np.zeros((60, 80), np.uint8)
    bottom[59, 30:40] = 255  # an object leaving the frame at the bottom edge
    right = np.zeros((60, 80), np.uint8)
    right[20:30, 79] = 255
    middle = np.zeros((60, 80), np.uint8)
    middle[20:35, 25:50] = 255
    for gt in (bottom, right):
        prediction = cv2.GaussianBlur(gt, (0, 0), 2)
        library = Smeasure()
        with pytest.warns(RuntimeWarning):  # numpy: the mean of an empty slice
            library.step(pred=prediction, gt=gt)
        assert np.isnan(library.get_results()["sm"])  # the library's behaviour this works around
        scorer = SequenceScorer()
        scorer.step(prediction, gt)
        assert 0.5 < scorer.results()["s_measure"] <= 1.0
    # Anywhere else, the same number as the library's.
    prediction = cv2.GaussianBlur(middle, (0, 0), 3)
    library, safe = Smeasure(), BorderSafeSmeasure()
    library.step(pred=prediction, gt=middle)
    safe.step(pred=prediction, gt=middle)
    assert safe.get_results()["sm"] == library.get_results()["sm"]


def test_inverted_prediction_scores_badly(davis_root: Path) -> None:
    sequences = load_dataset("davis", davis_root, split="val")
    perfect = oracle(sequences)

    def inverted(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for mask in perfect(frames):
            yield 255 - mask

    result = evaluate_sequences(inverted, sequences, progress=False)
    assert result["mae"] == pytest.approx(1.0)
    assert result["s_measure"] < 0.2
    assert result["max_f"] < 0.5


def test_frame_difference_marks_the_moving_object() -> None:
    images, masks = square_frames(6)
    maps = list(frame_difference_clip(images))
    assert len(maps) == len(images)
    for motion, mask in zip(maps, masks, strict=True):
        assert motion.dtype == np.uint8 and motion.shape == mask.shape
        assert motion.max() == 255  # normalised per frame
        assert motion[mask > 0].mean() > 2 * motion[mask == 0].mean()
    assert maps[0].max() > 0
    assert list(frame_difference_clip([])) == []
    assert next(iter(frame_difference_clip(images[:1]))).max() == 0  # one frame: no motion, nothing salient


def test_frame_difference_is_scored_and_far_from_perfect(davis_root: Path) -> None:
    sequences = load_dataset("davis", davis_root, split="val")
    result = evaluate_sequences(frame_difference_clip, sequences, progress=False)
    for metric in ("mae", "s_measure", "max_f", "mean_e"):
        assert 0.0 <= result[metric] <= 1.0
    assert result["mae"] > 0.0 and result["s_measure"] < 0.95
    assert result["fps_model"] > 0 and result["fps_end_to_end"] > 0


def vsod_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_eval_prints_metrics_and_json(davis_root: Path, model_store_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    done = vsod_train("eval", "--dataset", "davis", "--root", str(davis_root), "--split", "val", "--model",
                      "test-student", "--baseline", "framediff", "--json", str(out), "--no-progress", env=model_store_env)
    assert done.returncode == 0, done.stderr
    for title in ("MAE", "S-measure", "max F", "mean E", "fps model", "fps e2e", "test-student", "framediff"):
        assert title in done.stdout
    payload = json.loads(out.read_text())
    assert payload["dataset"] == "davis" and payload["split"] == "val"
    for method in ("test-student", "framediff"):
        result = payload["results"][method]
        assert {"mae", "s_measure", "max_f", "mean_e", "fps_model", "fps_end_to_end"} <= set(result)
        assert result["sequences"] == 2 and result["frames_scored"] == 8
        assert all(0.0 <= result[m] <= 1.0 for m in ("mae", "s_measure", "max_f", "mean_e"))

    to_stdout = vsod_train("eval", "--root", str(davis_root), "--split", "val", "--json", "-", "--max-sequences", "1",
                           "--no-progress", env=model_store_env)  # --model from VSOD_MODEL
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert json.loads(to_stdout.stdout)["results"]["test-student"]["sequences"] == 1
    assert "S-measure" in to_stdout.stderr  # the table moves to stderr so stdout stays JSON


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--root", "{missing}", "--model", "test-student"], "does not exist"),
        (["--dataset", "nosuch", "--root", "{root}", "--model", "test-student"], "unknown dataset"),
        (["--root", "{root}", "--split", "val", "--model", "no-such-model"], "not found"),
        (["--root", "{root}", "--split", "val", "--baseline", "nosuch"], "unknown baseline"),
    ],
)
def test_cli_eval_errors_are_one_line(args: list[str], needle: str, davis_root: Path, model_store_env: dict[str, str],
                                      tmp_path: Path) -> None:
    args = [a.format(missing=tmp_path / "missing", root=davis_root) for a in args]
    done = vsod_train("eval", *args, env=model_store_env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsod-train eval:") and needle in lines[0], done.stderr
