"""`vsod predict` and `vsod models` as a user runs them: a real subprocess on real files."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from service.cli import summarize_metrics
from service.model import ModelStore, Predictor
from service.model.complexity import count_flops, count_parameters
from service.video import open_media

from .conftest import TEST_MODEL
from .servers import jpeg_claiming, png_claiming, write_clip

REPO = Path(__file__).resolve().parents[1]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def vsod_command() -> list[str]:
    """The installed console script when it belongs to this Python, else the module."""
    script = Path(sys.executable).parent / "vsod"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "service.cli"]


# One OpenMP thread per subprocess: on a machine shared with other jobs (CI beside training), two
# spinning OpenMP threads on two busy cores made vtest.avi 19x slower (72 s vs 3.8 s for 200 frames).
SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_vsod(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*vsod_command(), *map(str, args)],
        cwd=REPO, env={**os.environ, **SINGLE_THREAD, **env}, capture_output=True, text=True, timeout=300,
    )


def moving_square_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    frames = []
    for index in range(count):
        frame = np.full((height, width, 3), (40, 90, 60), np.uint8)
        x = 4 + 3 * index
        frame[20:44, x : x + 24] = (230, 200, 30)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 96x80 H.264 clip written with PyAV directly (independent of our writers)."""
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(15))
        stream.width, stream.height, stream.pix_fmt = 96, 80, "yuv420p"
        for index, frame in enumerate(moving_square_frames(12, 80, 96)):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def predictor(model_store: ModelStore) -> Predictor:
    return Predictor.from_store(TEST_MODEL, model_store, device="cpu")


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2, path
    return mask


def decoded_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    with open_media(path) as source:
        return [frame for _, frame in itertools.islice(source.frames(), limit)]


def test_predict_video_png_matches_predictor(
    tmp_path: Path, small_video: Path, model_store_env: dict[str, str], predictor: Predictor
) -> None:
    out = tmp_path / "masks"
    result = run_vsod(model_store_env, "predict", small_video, "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^12 frames in [\d.]+ s \([\d.]+ fps end to end\)", result.stdout, re.M), result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(12)]
    frames = decoded_frames(small_video)
    expected = list(predictor.predict_clip(frames))
    for index, mask in enumerate(expected):
        written = read_mask(out / f"{index:05d}.png")
        assert written.shape == (80, 96)
        assert np.abs(written.astype(int) - mask).max() <= 1  # threads may flip a rounding


def test_predict_video_mp4_and_overlay(tmp_path: Path, small_video: Path, model_store_env: dict[str, str]) -> None:
    result = run_vsod(model_store_env, "predict", small_video, "--out", tmp_path, "--format", "mp4", "--quiet")
    assert result.returncode == 0, result.stderr
    result = run_vsod(model_store_env, "predict", small_video, "--out", tmp_path, "--format", "overlay",
                      "--max-frames", "5", "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["square_mask.mp4", "square_overlay.mp4"]
    for name, count in (("square_mask.mp4", 12), ("square_overlay.mp4", 5)):
        with open_media(tmp_path / name) as source:
            assert source.info.size == (80, 96)
            assert source.info.fps == pytest.approx(15)
            assert sum(1 for _ in source.frames()) == count
    mask_frame = decoded_frames(tmp_path / "square_mask.mp4", 1)[0]
    assert np.abs(mask_frame[..., 0].astype(int) - mask_frame[..., 2]).max() <= 4  # gray video


def test_predict_folder_of_frames(
    tmp_path: Path, model_store_env: dict[str, str], predictor: Predictor
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = moving_square_frames(5, 80, 96)
    frames[3] = cv2.resize(frames[3], (70, 50))  # frames of a folder may differ in size
    stems = ["img_1", "img_2", "img_9", "img_10", "img_11"]  # natural, not lexical, order
    for stem, frame in zip(stems, frames, strict=True):
        assert cv2.imwrite(str(folder / f"{stem}.jpg" if stem != "img_9" else folder / f"{stem}.png"), frame[..., ::-1])
    (folder / "img_5.jpg").write_bytes(b"corrupt: not a jpeg")
    (folder / "img_6.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken")  # a PNG signature: OpenCV logs about it
    out = tmp_path / "out"
    result = run_vsod(model_store_env, "predict", folder, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "img_5.jpg" in result.stderr and "img_6.png" in result.stderr
    assert all(line.startswith("warning: skipping corrupt frame: ") for line in result.stderr.splitlines()), result.stderr
    assert sorted(p.stem for p in out.iterdir()) == sorted(stems)
    read_back = [cv2.imread(str(next(folder.glob(f"{stem}.*"))))[..., ::-1].copy() for stem in stems]
    expected = list(predictor.predict_clip(read_back))
    for stem, frame, mask in zip(stems, read_back, expected, strict=True):
        written = read_mask(out / f"{stem}.png")
        assert written.shape == frame.shape[:2]
        assert np.abs(written.astype(int) - mask).max() <= 1

    result = run_vsod(model_store_env, "predict", folder, "--out", out, "--format", "overlay", "--fps", "5", "--quiet")
    assert result.returncode == 0, result.stderr
    with open_media(out / "frames_overlay.mp4") as source:
        assert source.info.fps == pytest.approx(5) and sum(1 for _ in source.frames()) == 5


def test_predict_single_image(tmp_path: Path, model_store_env: dict[str, str], predictor: Predictor) -> None:
    frame = moving_square_frames(1, 61, 83)[0]
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), frame[..., ::-1])
    out = tmp_path / "out"
    assert run_vsod(model_store_env, "predict", image, "--out", out, "--quiet").returncode == 0
    assert run_vsod(model_store_env, "predict", image, "--out", out, "--format", "overlay", "--quiet").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["still.png", "still_overlay.png"]
    mask = read_mask(out / "still.png")
    assert mask.shape == (61, 83)
    assert np.abs(mask.astype(int) - predictor.predict_image(frame)).max() <= 1
    assert cv2.imread(str(out / "still_overlay.png")).shape == (61, 83, 3)


def test_predict_animated_gif_and_webp(tmp_path: Path, model_store_env: dict[str, str]) -> None:
    """An animated GIF is a clip (one mask per frame), a WebP an image: the formats the server reads."""
    frames = moving_square_frames(5, 48, 64)
    write_clip(tmp_path / "anim.gif", frames)
    assert cv2.imwrite(str(tmp_path / "still.webp"), frames[0][..., ::-1])
    out = tmp_path / "out"
    result = run_vsod(model_store_env, "predict", tmp_path / "anim.gif", "--out", out / "gif", "--quiet")
    assert result.returncode == 0 and result.stdout.startswith("5 frames in "), result.stderr
    assert sorted(p.name for p in (out / "gif").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert read_mask(out / "gif" / "00004.png").shape == (48, 64)
    result = run_vsod(model_store_env, "predict", tmp_path / "still.webp", "--out", out / "webp", "--quiet")
    assert result.returncode == 0 and result.stdout.startswith("1 frame in "), result.stderr
    assert read_mask(out / "webp" / "still.png").shape == (48, 64)


def test_predict_says_when_a_video_holds_fewer_frames_than_it_announces(
    tmp_path: Path, model_store_env: dict[str, str]
) -> None:
    """An AVI whose header claims 20 frames and holds 10 (as OpenCV's own tree.avi claims 444 and holds
    68): every frame there gets its mask, and the user hears of the gap instead of a progress bar
    that stops short in silence."""
    data = bytearray(write_clip(tmp_path / "ten.avi", moving_square_frames(10, 48, 64)).read_bytes())
    for chunk, offset in ((b"avih", 16), (b"strh", 32)):  # dwTotalFrames, the stream's dwLength
        position = data.index(chunk) + 8 + offset
        assert struct.unpack_from("<I", data, position) == (10,)
        struct.pack_into("<I", data, position, 20)
    claims = tmp_path / "claims.avi"
    claims.write_bytes(bytes(data))
    result = run_vsod(model_store_env, "predict", claims, "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 10 and result.stdout.startswith("10 frames in ")
    assert "claims.avi's container announces 20 frames but holds 10" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not VTEST.is_file(), reason="Debian's opencv-doc sample vtest.avi is not installed")
def test_predict_real_sample_video(tmp_path: Path, model_store_env: dict[str, str], predictor: Predictor) -> None:
    """The whole of vtest.avi (795 frames, 768x576): one mask per frame."""
    out = tmp_path / "vtest"
    result = run_vsod(model_store_env, "predict", VTEST, "--out", out, "--quiet", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("795 frames in ")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(795)]
    assert read_mask(out / "00794.png").shape == (576, 768)
    # The state runs forwards only, so the first frames' masks depend on those frames alone.
    expected = list(predictor.predict_clip(decoded_frames(VTEST, 20)))
    for index, mask in enumerate(expected):
        assert np.abs(read_mask(out / f"{index:05d}.png").astype(int) - mask).max() <= 1


@pytest.mark.parametrize(
    ("case", "code"),
    [("missing", 1), ("empty-folder", 1), ("text-as-mp4", 1), ("unknown-model", 1), ("mp4-from-image", 2), ("no-out", 2)],
)
def test_predict_bad_input_is_one_line(
    tmp_path: Path, small_video: Path, model_store_env: dict[str, str], case: str, code: int
) -> None:
    out = tmp_path / "out"
    args: list[str | Path] = ["predict"]
    if case == "missing":
        args += [tmp_path / "nope.mp4", "--out", out]
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        args += [tmp_path / "empty", "--out", out]
    elif case == "text-as-mp4":
        (tmp_path / "fake.mp4").write_text("this is not a video\n")
        args += [tmp_path / "fake.mp4", "--out", out]
    elif case == "unknown-model":
        args += [small_video, "--out", out, "--model", "no-such-model"]
    elif case == "mp4-from-image":
        cv2.imwrite(str(tmp_path / "one.png"), np.zeros((8, 8, 3), np.uint8))
        args += [tmp_path / "one.png", "--out", out, "--format", "mp4"]
    else:
        args += [small_video]
    result = run_vsod(model_store_env, *args)
    assert result.returncode == code
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vsod predict: error: ")
    assert not out.exists(), "nothing is written for bad input"


@pytest.mark.parametrize("case", ["png-image", "jpeg-in-folder", "setting"])
def test_predict_checks_images_from_their_header_as_the_server_does(
    tmp_path: Path, model_store_env: dict[str, str], case: str
) -> None:
    """A few hundred bytes claiming 100000x100000 pixels: one line and exit 1, before any decoding;
    the limit is the server's own (VSOD_MAX_FRAME_SIDE, service.limits)."""
    out, env = tmp_path / "out", dict(model_store_env)
    if case == "png-image":
        source = tmp_path / "bomb.png"
        source.write_bytes(png_claiming(100_000, 100_000))
        expected = "bomb.png: the image is 100000x100000; the limit is 4096 pixels a side"
    elif case == "jpeg-in-folder":
        source = tmp_path / "frames"
        source.mkdir()
        for index, frame in enumerate(moving_square_frames(3, 72, 96)):
            cv2.imwrite(str(source / f"{index:03d}.jpg"), frame)
        (source / "003.jpg").write_bytes(jpeg_claiming(65_000, 60_000))
        expected = "frames/003.jpg: the image is 65000x60000; the limit is 4096 pixels a side"
    else:  # an ordinary 96x72 frame over a limit set as the server's is
        source = tmp_path / "small.png"
        cv2.imwrite(str(source), moving_square_frames(1, 72, 96)[0])
        env["VSOD_MAX_FRAME_SIDE"] = "64"
        expected = "small.png: the image is 96x72; the limit is 64 pixels a side"
    result = run_vsod(env, "predict", source, "--out", out)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"vsod predict: error: {expected} (VSOD_MAX_FRAME_SIDE sets the limit)"]
    assert not out.exists()


def test_predict_refuses_to_overwrite_input_frames(tmp_path: Path, model_store_env: dict[str, str]) -> None:
    frame = moving_square_frames(1, 40, 40)[0]
    cv2.imwrite(str(tmp_path / "00000.png"), frame[..., ::-1])
    before = (tmp_path / "00000.png").read_bytes()
    result = run_vsod(model_store_env, "predict", tmp_path, "--out", tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "overwrite" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["00000.png"]
    assert (tmp_path / "00000.png").read_bytes() == before


def test_models_lists_store(model_store_env: dict[str, str]) -> None:
    result = run_vsod(model_store_env, "models")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^{TEST_MODEL}\s+128x128\s+test\s+onnx\b", result.stdout, re.M), result.stdout


def test_models_verbose_prints_measured_numbers(model_store_env: dict[str, str], model_store: ModelStore) -> None:
    result = run_vsod(model_store_env, "models", "--verbose")
    assert result.returncode == 0, result.stderr
    row = re.search(rf"^{TEST_MODEL}\s+128x128\s+test\s+onnx\s+([\d.]+)M\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)KiB",
                    result.stdout, re.M)
    assert row, result.stdout
    params, gflops_352, gflops_input, state_kib = (float(g) for g in row.groups())
    assert state_kib == pytest.approx(4 * 64 * 4 * 4 / 1024, abs=0.05)  # 64 channels on the 4x4 stride-32 grid of 128x128
    model, _ = model_store.load(TEST_MODEL)
    assert params == pytest.approx(count_parameters(model) / 1e6, abs=1e-3)
    assert gflops_352 == pytest.approx(count_flops(model, (352, 352)) / 1e9, abs=1e-3)
    # The budget, measured: at most 2.5 M parameters and 1.5 GFLOPs per frame at 352x352.
    assert 0 < params <= 2.5 and 0 < gflops_352 <= 1.5
    assert 0 < gflops_input < gflops_352  # 128x128 costs less than 352x352


def test_metrics_summary_puts_headline_numbers_first() -> None:
    metrics = {
        "synthetic-val": {"mae": 0.021, "s_measure": 0.912, "max_f": 0.88, "mean_e": 0.93, "fps_model": 120.5,
                          "per_sequence": {"seq": {"mae": 0.5}}},
        "frame_difference": {"s_measure": 0.5},
    }
    assert summarize_metrics(metrics) == "synthetic-val: s_measure=0.912 max_f=0.880 mean_e=0.930 mae=0.021 …"
    assert summarize_metrics({}) == "-"


def test_models_lists_a_model_it_cannot_load_as_an_error_row(tmp_path: Path) -> None:
    """`vsod models --verbose` over a store with a model from a newer vsod: that model's row says why, and
    the others are still listed."""
    from tests.conftest import make_test_store

    make_test_store(tmp_path / "store")
    shutil.copytree(tmp_path / "store" / TEST_MODEL, tmp_path / "store" / "newer")
    manifest = json.loads((tmp_path / "store" / "newer" / "manifest.json").read_text())
    manifest["config"]["refine_channels"] = 8
    (tmp_path / "store" / "newer" / "manifest.json").write_text(json.dumps(manifest))
    result = run_vsod({}, "models", "--verbose", "--store", tmp_path / "store")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^newer\s+error:\s+model 'newer': the config has keys this vsod does not know \(refine_channels\)",
                     result.stdout, re.M), result.stdout
    assert re.search(rf"^{TEST_MODEL}\s+128x128\s+test\s+onnx\s+[\d.]+M", result.stdout, re.M), result.stdout


def test_models_missing_store_is_one_line(tmp_path: Path) -> None:
    result = run_vsod({}, "models", "--store", tmp_path / "nowhere")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1


def test_flop_counter_counts_a_multiply_add_as_two() -> None:
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    depthwise = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
    model = torch.nn.Sequential(conv, depthwise)
    pixels = 10 * 12
    assert count_flops(model, (10, 12)) == 2 * pixels * (16 * 3 * 9 + 16 * 9)
    assert count_parameters(model) == 16 * 3 * 9 + 16 + 16 * 9 + 16


def test_flops_include_the_inter_frame_encoding(predictor: Predictor) -> None:
    model = predictor.model
    without_attention = count_flops(model.encoder, (128, 128))
    assert count_flops(model, (128, 128)) > without_attention


@pytest.mark.parametrize("script", ["model_speed.py", "state.py", "step_profile.py"])
def test_a_bench_script_refuses_an_unknown_model_in_one_line(script: str, model_store_env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, f"bench/{script}", "--model", "no-such-model"], cwd=REPO,
                            env={**os.environ, **model_store_env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.startswith(f"{script}: error: model 'no-such-model' not found") and result.stderr.count("\n") == 1


def test_bench_model_speed_runs_and_ends_with_json(model_store_env: dict[str, str]) -> None:
    """The benchmark script works (tiny settings; its timings are not asserted, only present)."""
    result = subprocess.run(
        [sys.executable, "bench/model_speed.py", "--model", TEST_MODEL, "--size", "64", "64",
         "--batches", "2", "--warmup", "1", "--runs", "2", "--threads", "1"],
        cwd=REPO, env={**os.environ, **model_store_env}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["threads"] == [1] and summary["input"] == [64, 64]
    [(name, numbers)] = summary["results"].items()
    assert name.startswith(f"student:{TEST_MODEL}@")
    assert set(numbers["ms_per_frame"]) == {"onnxruntime_b2_t1", "torchscript_b2_t1", "eager_b2_t1"}
    assert set(summary["ratios"]) == {"torchscript/onnxruntime", "eager/onnxruntime"}
    assert all(ms > 0 for ms in numbers["ms_per_frame"].values())
    assert numbers["params"] > 0 and numbers["gflops"] > 0
