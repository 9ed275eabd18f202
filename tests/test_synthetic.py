"""Synthetic clips: deterministic bytes, DAVIS-2016 layout, masks that match the drawn objects."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.data import load_dataset, read_mask, read_rgb
from distill.data.loaders import load_davis
from distill.data.render import Effects, render_frame
from distill.data.synthetic import SceneStyle, add_synth_command, generate_synthetic, sample_scene, sequence_rng

SIZE = (48, 80)
REPO = Path(__file__).resolve().parents[1]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    names_a = generate_synthetic(tmp_path / "a", 2, 3, seed=5, size=SIZE)
    names_b = generate_synthetic(tmp_path / "b", 2, 3, seed=5, size=SIZE)
    generate_synthetic(tmp_path / "c", 2, 3, seed=6, size=SIZE)
    assert names_a == names_b == ["syn-train-s5-0000", "syn-train-s5-0001"]
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a == b and len(a) == 2 * 3 * 2 + 1
    c = tree_bytes(tmp_path / "c")
    frames_a = [v for k, v in sorted(a.items()) if k.endswith(".jpg")]
    frames_c = [v for k, v in sorted(c.items()) if k.endswith(".jpg")]
    assert all(x != y for x, y in zip(frames_a, frames_c, strict=True))


def test_a_clip_does_not_depend_on_how_many_were_generated(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "one", 1, 2, seed=1, size=SIZE)
    generate_synthetic(tmp_path / "three", 3, 2, seed=1, size=SIZE)
    name = "JPEGImages/480p/syn-train-s1-0000/00001.jpg"
    assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes()


def test_davis_2016_layout_and_split_merge(tmp_path: Path) -> None:
    train = generate_synthetic(tmp_path, 2, 3, seed=0, size=SIZE, split="train")
    val = generate_synthetic(tmp_path, 1, 4, seed=0, size=SIZE, split="val")
    assert set(train).isdisjoint(val)
    lines = (tmp_path / "ImageSets/480p/train.txt").read_text().splitlines()
    assert lines[0] == f"/JPEGImages/480p/{train[0]}/00000.jpg /Annotations/480p/{train[0]}/00000.png"
    assert len(lines) == 6
    for line in lines:
        image, mask = line.split()
        assert (tmp_path / image.lstrip("/")).is_file() and (tmp_path / mask.lstrip("/")).is_file()
    # Regenerating one split with fewer frames replaces its lines and files, keeps the other split.
    generate_synthetic(tmp_path, 2, 2, seed=0, size=SIZE, split="train")
    assert len((tmp_path / "ImageSets/480p/train.txt").read_text().splitlines()) == 4
    assert not (tmp_path / f"JPEGImages/480p/{train[0]}/00002.jpg").exists()
    assert len((tmp_path / "ImageSets/480p/val.txt").read_text().splitlines()) == 4

    frame = cv2.imread(str(tmp_path / f"JPEGImages/480p/{val[0]}/00000.jpg"))
    mask = cv2.imread(str(tmp_path / f"Annotations/480p/{val[0]}/00000.png"), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (*SIZE, 3) and mask.shape == SIZE and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}


def test_davis_loader_reads_the_synthetic_output(tmp_path: Path) -> None:
    names = generate_synthetic(tmp_path, 3, 4, seed=2, size=SIZE, split="val")
    sequences = load_dataset("davis", tmp_path, "val")
    assert [s.name for s in sequences] == names
    for sequence in sequences:
        assert len(sequence.frames) == 4 and sorted(sequence.masks) == [0, 1, 2, 3]
        assert read_rgb(sequence.frames[0]).shape == (*SIZE, 3)
    with pytest.raises(ValueError, match="no split 'test'"):
        load_davis(tmp_path, "test")


def test_written_masks_are_the_rendered_ground_truth(tmp_path: Path) -> None:
    generate_synthetic(tmp_path, 2, 3, seed=3, size=SIZE)
    for index in range(2):
        scene = sample_scene(sequence_rng(3, "train", index), SIZE, 3)
        for t in range(3):
            frame, mask = render_frame(scene, t)
            stem = f"syn-train-s3-{index:04d}/{t:05d}"
            assert np.array_equal(read_mask(tmp_path / f"Annotations/480p/{stem}.png"), mask)
            written = read_rgb(tmp_path / f"JPEGImages/480p/{stem}.jpg").astype(int)
            assert np.abs(written - frame.astype(int)).mean() < 8.0  # only JPEG loss (noisy, tiny frames)


def test_mask_pixels_are_exactly_the_salient_objects() -> None:
    """Solid colours, no effects: every pixel nearer an object's colour than the background's is in the
    mask and no other, whatever the camera and object motion do."""
    checked = inside = exact_inside = background = outside_total = 0
    for index in range(12):
        scene = sample_scene(sequence_rng(7, "train", index), (64, 96), 6)
        scene.background[:] = np.array([20, 50, 80]) / 255.0
        scene.effects = Effects()
        scene.layers = [layer for layer in scene.layers if layer.salient]
        for layer in scene.layers:
            layer.rgb[:] = np.array([230, 200, 30]) / 255.0
            layer.shadow = 0.0
        for t in range(6):
            frame, mask = render_frame(scene, t, effects=False)
            pixels = frame.reshape(-1, 3).astype(float)
            nearer = np.linalg.norm(pixels - (230, 200, 30), axis=1) < np.linalg.norm(pixels - (20, 50, 80), axis=1)
            nearer = nearer.reshape(mask.shape)
            disagree = nearer != mask
            # Only pixels the object covers almost exactly half can round either way.
            assert disagree.sum() <= max(2, 0.02 * mask.sum()), (index, t)
            eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            outside = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            exact_inside += int((frame[eroded] == (230, 200, 30)).all(axis=1).sum())
            inside += int(eroded.sum())
            background += int((frame[outside] == (20, 50, 80)).all(axis=1).sum())
            outside_total += int(outside.sum())
            checked += int(mask.any())
    assert checked > 30  # objects were on screen in most frames
    # Inside: the object's own colour (thin or downscaled parts keep some edge blending).
    assert exact_inside > 0.7 * inside
    # Outside: the background, but for faint edges of parts thinner than half a pixel.
    assert background > 0.98 * outside_total


def test_clips_hold_the_promised_ingredients() -> None:
    scenes = [sample_scene(sequence_rng(0, "train", i), (64, 96), 8) for i in range(60)]
    assert any(scene.camouflage for scene in scenes)
    assert any(not layer.salient for scene in scenes for layer in scene.layers)  # distractors
    assert {sum(layer.salient for layer in scene.layers) for scene in scenes} == {1, 2, 3}
    moving = [not np.allclose(s.camera.start, s.camera.end) for s in scenes]
    assert 0 < sum(moving) < len(scenes)


def test_a_motion_only_set_camouflages_every_clip_and_the_default_mix_is_unchanged() -> None:
    every = [sample_scene(sequence_rng(0, "val", i), (64, 96), 8, camouflage_share=1.0) for i in range(12)]
    assert all(scene.camouflage for scene in every)
    assert all(sum(layer.salient for layer in scene.layers) == 1 for scene in every)  # one object, only motion shows it
    assert not any(sample_scene(sequence_rng(0, "val", i), (64, 96), 8, camouflage_share=0.0).camouflage for i in range(40))
    default = [sample_scene(sequence_rng(0, "train", i), (64, 96), 8) for i in range(60)]
    explicit = [sample_scene(sequence_rng(0, "train", i), (64, 96), 8, camouflage_share=0.08) for i in range(60)]
    assert [s.camouflage for s in default] == [s.camouflage for s in explicit]
    assert all(np.array_equal(a.background, b.background) for a, b in zip(default, explicit, strict=True))


def test_defocus_blurs_the_scenery_and_keeps_everything_else() -> None:
    """`--defocus` draws after everything else: the same objects, moves and masks, the scenery softer."""
    size = (96, 128)
    sharp = [sample_scene(sequence_rng(2, "train", i), size, 4) for i in range(12)]
    soft = [sample_scene(sequence_rng(2, "train", i), size, 4, style=SceneStyle(defocus_share=1.0)) for i in range(12)]
    defocused = textured = 0
    for a, b in zip(sharp, soft, strict=True):
        frame_a, mask_a = render_frame(a, 2, effects=False)
        frame_b, mask_b = render_frame(b, 2, effects=False)
        assert np.array_equal(mask_a, mask_b) and np.array_equal(a.camera.start, b.camera.start)
        if a.camouflage:
            assert np.array_equal(frame_a, frame_b)  # only motion reveals it: a blur would give it away
            continue
        defocused += 1
        def detail(image: np.ndarray, where: np.ndarray) -> float:
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
            return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[where].mean())

        outside = cv2.erode((~mask_a).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        inside = cv2.erode(mask_a.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert not np.array_equal(a.background, b.background)
        if detail(frame_a, outside) >= 2.0:  # a textured scenery (a smooth one has little for a blur to take)
            textured += 1
            assert detail(frame_b, outside) < 0.7 * detail(frame_a, outside)
        if inside.any():  # the objects are drawn over the blurred scenery, as sharp as before
            # (a pixel of a thin part may still let some of the scenery through)
            assert float(np.abs(frame_a[inside].astype(np.float32) - frame_b[inside]).mean()) < 0.1
    assert defocused >= 6 and textured >= 3


def test_object_size_scales_the_salient_objects_only_where_asked() -> None:
    size = (96, 128)

    def covered(style: SceneStyle) -> float:
        scenes = [sample_scene(sequence_rng(3, "train", i), size, 2, style=style) for i in range(30)]
        return float(np.mean([render_frame(scene, 0, effects=False)[1].mean() for scene in scenes]))

    small, default, large = covered(SceneStyle((0.05, 0.1))), covered(SceneStyle()), covered(SceneStyle((0.4, 0.5)))
    assert small < 0.5 * default and large > 1.5 * default
    for bad in ({"object_size": (0.3, 0.2)}, {"object_size": (0.0, 0.2)}, {"defocus_share": -0.1},
                {"defocus_share": float("nan")}):
        with pytest.raises(ValueError):
            SceneStyle(**bad)  # type: ignore[arg-type]


def test_synth_command_through_its_own_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_synth_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path), "--sequences", "2", "--frames", "2",
                              "--seed", "4", "--size", "40x64", "--split", "val"])
    assert args.func(args) == 0
    assert len(load_davis(tmp_path, "val")) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--out", str(tmp_path), "--size", "big"])
    bad = parser.parse_args(["synth", "--out", str(tmp_path), "--sequences", "0"])
    with pytest.raises(ValueError, match="at least one sequence"):
        bad.func(bad)
    bad = parser.parse_args(["synth", "--out", str(tmp_path), "--camouflage", "1.5"])
    with pytest.raises(ValueError, match=r"camouflaged share must lie in \[0, 1\]"):
        bad.func(bad)


def test_vsod_train_synth_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "distill.cli", "synth", "--out", str(tmp_path / "syn"), "--sequences", "2",
               "--frames", "3", "--seed", "9", "--size", "40x64", "--split", "val"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 2 sequences" in done.stdout
    assert [s.name for s in load_davis(tmp_path / "syn", "val")] == ["syn-val-s9-0000", "syn-val-s9-0001"]
    failed = subprocess.run([*command[:-2], "--split", "no/good"], capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0 and "split name" in failed.stderr
