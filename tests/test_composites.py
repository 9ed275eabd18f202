"""Real-object composites: cut-outs by a teacher's soft maps, real backgrounds, exact masks, by seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from distill.data.composites import CompositeAssets, load_backgrounds, load_cutouts, load_scene_photos
from distill.data.loaders import load_davis
from distill.data.provenance import root_provenance
from distill.data.render import Effects, render_frame
from distill.data.sequences import read_mask
from distill.data.synthetic import generate_synthetic, sample_scene, sequence_rng

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 96)


def ellipse_map(shape: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    """An 8-bit soft map: a filled ellipse at the centre, its rim blurred."""
    soft = np.zeros(shape, np.uint8)
    cv2.ellipse(soft, (shape[1] // 2, shape[0] // 2), axes, 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(soft, (0, 0), 3)


def write_photos(root: Path) -> Path:
    """A labelled photos root as `vsod-train label` writes it: real photos (scikit-image), soft maps."""
    photos = {
        "astronaut": (skimage.data.astronaut(), (110, 170)),  # ~22% of the photo: an object
        "chelsea": (skimage.data.chelsea(), (8, 6)),  # ~0.1%: noise, skipped
        "coffee": (skimage.data.coffee(), (400, 400)),  # ~all of it: a background, skipped
        "box": (skimage.data.rocket(), (100, 100)),  # an evaluation name: never cut out
    }
    lines = []
    for name, (photo, axes) in photos.items():
        (root / "JPEGImages/480p" / name).mkdir(parents=True)
        (root / "Annotations/480p" / name).mkdir(parents=True)
        cv2.imwrite(str(root / f"JPEGImages/480p/{name}/00000.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"Annotations/480p/{name}/00000.png"), ellipse_map(photo.shape[:2], axes))
        lines.append(f"/JPEGImages/480p/{name}/00000.jpg /Annotations/480p/{name}/00000.png")
    (root / "ImageSets/480p").mkdir(parents=True)
    (root / "ImageSets/480p/train.txt").write_text("\n".join(lines) + "\n")
    return root


def write_backgrounds(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    (folder / "theme" / "deep").mkdir(parents=True)
    texture = lambda h, w: cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 4)  # noqa: E731
    cv2.imwrite(str(folder / "wall.jpg"), texture(600, 800))
    cv2.imwrite(str(folder / "theme" / "deep" / "waves.webp"), texture(500, 520))
    cv2.imwrite(str(folder / "theme" / "box.png"), texture(600, 600))  # reserved for evaluation
    cv2.imwrite(str(folder / "theme" / "logo.png"), texture(600, 600))  # a logo: an unlabelled object
    cv2.imwrite(str(folder / "theme" / "sddm-preview.jpg"), texture(500, 900))  # a login screen: avatars, text
    cv2.imwrite(str(folder / "theme" / "dot.png"), texture(21, 21))  # an icon
    (folder / "theme" / "vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> CompositeAssets:
    base = tmp_path_factory.mktemp("assets")
    return CompositeAssets.load(write_photos(base / "photos"), [write_backgrounds(base / "backgrounds")])


def test_cutouts_keep_objects_and_skip_noise_backgrounds_and_reserved_names(tmp_path: Path) -> None:
    cutouts = load_cutouts(write_photos(tmp_path / "photos"))
    assert [c.name for c in cutouts] == ["astronaut/00000"]
    cutout = cutouts[0]
    assert cutout.alpha.shape == cutout.rgb.shape[:2] and cutout.alpha.shape[0] < 512
    assert cutout.alpha.dtype == np.float32 and cutout.alpha.min() >= 0 and cutout.alpha.max() <= 1
    assert ((cutout.alpha > 0.2) & (cutout.alpha < 0.8)).any()  # the soft rim is kept
    assert cutout.alpha[cutout.alpha > 0].min() >= 0.1  # faint teacher noise is not pasted
    with pytest.raises(ValueError, match="nothing to cut out"):
        load_cutouts(_only(tmp_path, "chelsea"))


def _only(tmp_path: Path, name: str) -> Path:
    root = write_photos(tmp_path / f"only-{name}")
    lines = [line for line in (root / "ImageSets/480p/train.txt").read_text().splitlines() if f"/{name}/" in line]
    (root / "ImageSets/480p/train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_backgrounds_are_raster_wallpapers_only(tmp_path: Path) -> None:
    folder = write_backgrounds(tmp_path / "bg")
    images = load_backgrounds([folder])
    assert sorted(Path(p).name for p in images) == ["wall.jpg", "waves.webp"]
    assert all(image.dtype == np.uint8 and image.ndim == 3 for image in images.values())
    with pytest.raises(FileNotFoundError):
        load_backgrounds([tmp_path / "missing"])
    (tmp_path / "icons").mkdir()
    with pytest.raises(ValueError, match="no raster background"):
        load_backgrounds([tmp_path / "icons"])


def test_composites_are_deterministic_named_apart_and_recorded(tmp_path: Path, assets: CompositeAssets) -> None:
    names = generate_synthetic(tmp_path / "a", 2, 3, seed=3, size=SIZE, assets=assets)
    generate_synthetic(tmp_path / "b", 2, 3, seed=3, size=SIZE, assets=assets)
    plain = generate_synthetic(tmp_path / "a", 2, 3, seed=3, size=SIZE)  # same root, same split: both kept
    assert names == ["cmp-train-s3-0000", "cmp-train-s3-0001"] and plain == ["syn-train-s3-0000", "syn-train-s3-0001"]
    for name in names:
        for t in range(3):
            frame = f"JPEGImages/480p/{name}/{t:05d}.jpg"
            assert (tmp_path / "a" / frame).read_bytes() == (tmp_path / "b" / frame).read_bytes()
    assert {s.name for s in load_davis(tmp_path / "a", "train")} == set(names + plain)
    first = (tmp_path / "a" / f"JPEGImages/480p/{names[0]}/00000.jpg").read_bytes()
    assert first != (tmp_path / "a" / f"JPEGImages/480p/{plain[0]}/00000.jpg").read_bytes()
    record = json.loads((tmp_path / "a" / "composites.json").read_text())["train-s3"]
    assert record["objects"] == ["astronaut/00000"]
    assert sorted(Path(p).name for p in record["backgrounds"]) == ["wall.jpg", "waves.webp"]
    assert record["style"] == {"object_size": [0.16, 0.36], "defocus_share": 0.0}  # SceneStyle's defaults
    masks = [read_mask(tmp_path / "a" / f"Annotations/480p/{name}/{t:05d}.png") for name in names for t in range(3)]
    assert sum(mask.any() for mask in masks) >= 4


def test_composite_scenes_use_the_generators_motion_and_never_camouflage(assets: CompositeAssets) -> None:
    scenes = [sample_scene(sequence_rng(0, "train", i, composite=True), SIZE, 8, assets) for i in range(40)]
    assert not any(scene.camouflage for scene in scenes)
    assert {sum(layer.salient for layer in scene.layers) for scene in scenes} == {1, 2, 3}
    assert any(not np.allclose(s.camera.start, s.camera.end) for s in scenes)
    assert any(scene.effects.noise > 0 for scene in scenes) and any(scene.effects.gain_swing > 0 for scene in scenes)
    # Salient sprites are the cut-out, scaled: its soft alpha and aspect ratio, not a procedural silhouette.
    cutout = assets.cutouts[0]
    for layer in (layer for scene in scenes for layer in scene.layers if layer.salient):
        aspect = layer.alpha.shape[1] / layer.alpha.shape[0]
        assert abs(aspect - cutout.alpha.shape[1] / cutout.alpha.shape[0]) < 0.1


def test_composite_masks_are_exactly_the_pasted_objects(assets: CompositeAssets) -> None:
    """Solid colours, no effects: the mask is where a pasted object covers at least half a pixel."""
    checked = disagreeing = covered = 0
    for index in range(10):
        scene = sample_scene(sequence_rng(5, "train", index, composite=True), SIZE, 5, assets)
        scene.background[:] = np.array([20, 50, 80]) / 255.0
        scene.effects = Effects()
        scene.layers = [layer for layer in scene.layers if layer.salient]
        for layer in scene.layers:
            layer.rgb = np.ones_like(layer.rgb) * (np.array([230, 200, 30], np.float32) / 255.0)
            layer.shadow = 0.0
        for t in range(5):
            frame, mask = render_frame(scene, t, effects=False)
            pixels = frame.reshape(-1, 3).astype(float)
            nearer = np.linalg.norm(pixels - (230, 200, 30), axis=1) < np.linalg.norm(pixels - (20, 50, 80), axis=1)
            disagreeing += int((nearer.reshape(mask.shape) != mask).sum())
            covered += int(mask.sum())
            checked += int(mask.any())
    assert checked > 25
    assert disagreeing <= 0.02 * covered  # only pixels covered almost exactly half round either way


def test_vsod_train_synth_composites_cli(tmp_path: Path) -> None:
    photos, backgrounds = write_photos(tmp_path / "photos"), write_backgrounds(tmp_path / "bg")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "distill.cli", "synth", "--out", str(tmp_path / "cmp"), "--sequences", "1",
               "--frames", "2", "--seed", "4", "--size", "64x96", "--cutouts", str(photos), "--backgrounds", str(backgrounds)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [s.name for s in load_davis(tmp_path / "cmp", "train")] == ["cmp-train-s4-0000"]
    half = subprocess.run(command[:-2], capture_output=True, text=True, env=env, timeout=120)
    assert half.returncode == 1 and "need both --cutouts" in half.stderr and half.stderr.strip().count("\n") == 0


def test_scene_photos_keep_scenery_and_skip_photos_that_are_all_object(tmp_path: Path) -> None:
    photos = load_scene_photos(write_photos(tmp_path / "photos"))
    # astronaut (an object in a scene) and chelsea (a photo without an object) are scenery; coffee is all
    # object and box is reserved for evaluation.
    assert [photo.name for photo in photos] == ["astronaut/00000", "chelsea/00000"]
    assert photos[0].soft.shape == photos[0].rgb.shape[:2] and photos[0].soft.max() > 0.9


def test_without_scene_photos_the_scenery_is_the_background_draw_for_draw(assets: CompositeAssets) -> None:
    """Roots generated before scene photos existed regenerate byte for byte: no extra random draw."""
    first, second = np.random.default_rng(7), np.random.default_rng(7)
    scenery = assets.scenery(first, (60, 90), (40, 60))
    assert scenery.salient is None and scenery.reach is None
    assert np.array_equal(scenery.canvas, assets.background(second, 60, 90))
    assert first.random() == second.random()


def test_clips_set_in_a_scene_photo_mark_its_object_and_the_pasted_ones(tmp_path: Path) -> None:
    base = tmp_path / "assets"
    photos = write_photos(base / "photos")
    assets = CompositeAssets.load(photos, [write_backgrounds(base / "bg")], scene_root=photos, scene_share=1.0)
    checked = 0
    for index in range(12):
        scene = sample_scene(sequence_rng(2, "train", index, composite=True), SIZE, 4, assets)
        photo_layer = scene.layers[0]
        assert photo_layer.salient and photo_layer.world and photo_layer.rgb is not None
        pasted = [layer for layer in scene.layers[1:] if layer.salient]
        assert pasted, "the cut-outs still move over the photo"
        # Alone (no pasted objects, no distractors), the mask is exactly where the photo's map, seen
        # through the camera, is at least one half.
        scene.layers = [photo_layer]
        for t in (0, 3):
            _, mask = render_frame(scene, t, effects=False)
            camera = scene.camera.matrix(t, scene.steps, scene.size)
            expected = cv2.warpAffine(photo_layer.alpha, camera, (SIZE[1], SIZE[0]), flags=cv2.INTER_LINEAR) >= 0.5
            assert (mask != expected).mean() < 0.01
            checked += int(mask.any())
    assert checked >= 4  # the astronaut is in view in most clips


def test_vsod_train_synth_scenes_cli_records_them(tmp_path: Path) -> None:
    photos, backgrounds = write_photos(tmp_path / "photos"), write_backgrounds(tmp_path / "bg")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "distill.cli", "synth", "--out", str(tmp_path / "cmp"), "--sequences", "2",
               "--frames", "2", "--size", "64x96", "--scenes", str(photos), "--scene-share", "1"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "--scenes sets composites in photos" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and not (tmp_path / "cmp").exists()
    done = subprocess.run([*command, "--cutouts", str(photos), "--backgrounds", str(backgrounds)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "cmp" / "composites.json").read_text())["train-s0"]
    assert record["scene_photos"] == ["astronaut/00000", "chelsea/00000"] and record["scene_share"] == 1.0
    assert root_provenance(tmp_path / "cmp")["scenes"] == [str(photos.resolve())]
