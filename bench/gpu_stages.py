"""The GPU check's stages, each run by bench/gpu_check.py as a subprocess with its own time limit.

    python bench/gpu_stages.py backends --store STORE --model NAME --device cuda --variants eager torchscript
    python bench/gpu_stages.py server --store STORE --model NAME --device cuda --backend torchscript

A stage prints its cumulative report as one JSON line after each step (`emit`), so a stage stopped
for time keeps what it had measured: the driver reads the last line. What each stage measures is in
bench/gpu_check.py's docstring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(BENCH))  # bench/common.py, bench/concurrency.py

from tests.devices import float32_exact  # noqa: E402

CUDA_MODES = {"eager": "eager", "torchscript": "cuda-fp16", "onnxruntime-cuda": "onnxruntime-cuda",
              "onnxruntime": "onnxruntime-tensorrt"}
CPU_MODES = {"eager": "eager", "torchscript": "torchscript", "onnxruntime": "onnxruntime-cpu"}


# ---------------------------------------------------------------- reporting and inputs


def emit(report: dict[str, Any]) -> None:
    """A stage's cumulative report so far, as one JSON line (the driver keeps the last one)."""
    print(json.dumps(report, default=str), flush=True)


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:400]


@contextmanager
def cuda_provider_only() -> Iterator[None]:
    """ONNX Runtime as if TensorRT were not installed, so `StepRuntime` picks the CUDA provider."""
    from unittest import mock

    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(f"ONNX Runtime has no CUDA provider (onnxruntime-gpu not installed): {available}")
    with mock.patch.object(onnxruntime, "get_available_providers",
                           lambda: [p for p in available if p != "TensorrtExecutionProvider"]):
        yield


def sample_frames(count: int, size: tuple[int, int] = (576, 768)) -> tuple[list[Any], str]:
    """Real frames (OpenCV's vtest.avi) where the machine has them, else synthetic ones of that size."""
    from common import VIDEO, video_frames

    if VIDEO.exists():
        return video_frames(count), "vtest.avi"
    from tests.servers import moving_square_frames

    return moving_square_frames(count, *size, seed=1), "synthetic moving square"


# ---------------------------------------------------------------- stage: backends


def stage_backends(args: argparse.Namespace) -> int:
    """Agreement with the CPU's float32 model, then frames/s per backend (see the module doc)."""
    import torch

    from service.model import ModelStore
    from service.model.processing import frames_to_tensor
    from service.model.runtime import StepRuntime
    from service.model.step import StreamStep, step_disagreement

    device = torch.device(args.device)
    expected = CUDA_MODES if device.type == "cuda" else CPU_MODES
    store = ModelStore(args.store)
    model_cpu, manifest = store.load(args.model)
    size: tuple[int, int] = tuple(manifest.input_size)  # type: ignore[assignment]
    graph = store.step_graph(args.model, manifest)
    report: dict[str, Any] = {"stage": "backends", "device": str(device), "input": list(size), "modes": {},
                              "errors": {}, "agreement": {}, "fps": {}, "fps_over_eager": {}}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
        report["capability"] = list(torch.cuda.get_device_capability(device))
        report["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    emit(report)

    model_dev = store.load(args.model)[0].eval().to(device)
    runtimes: dict[str, StepRuntime] = {}
    for variant in args.variants:
        backend = "onnxruntime" if variant.startswith("onnxruntime") else variant
        started = time.perf_counter()
        try:
            with cuda_provider_only() if variant == "onnxruntime-cuda" else nullcontext():
                runtime = StepRuntime(model_dev, device, size, backend, graph)  # type: ignore[arg-type]
        except Exception as error:  # reported, and the other backends still run
            report["errors"][variant] = error_text(error)
            continue
        report["modes"][variant] = runtime.mode
        report.setdefault("build_s", {})[variant] = round(time.perf_counter() - started, 2)
        if runtime.mode != expected.get(variant, runtime.mode):
            report["errors"][variant] = f"runs as {runtime.mode}, not {expected[variant]}"
            continue
        runtimes[variant] = runtime
    if args.probe_onnxruntime and device.type == "cuda":  # what a server's `onnxruntime` picks here
        try:
            report["onnxruntime_as_built"] = StepRuntime(model_dev, device, size, "onnxruntime", graph).mode
        except Exception as error:
            report["onnxruntime_as_built"] = error_text(error)
    emit(report)

    def on_device(runtime: StepRuntime) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        def call(frames: torch.Tensor, previous: torch.Tensor | None = None,
                 fresh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            logits, state = runtime(frames.to(device), None if previous is None else previous.to(device),
                                    None if fresh is None else fresh.to(device))
            return logits.float().cpu(), state.float().cpu()
        return call

    frames, source = sample_frames(args.stream_frames)
    report["stream"] = f"{len(frames)} frames, {source}"
    clip = frames_to_tensor(frames, size).unsqueeze(1)  # T,1,3,H,W: one stream
    reference = StepRuntime(model_cpu, torch.device("cpu"), size, "eager")
    with torch.inference_mode():
        expected_logits, state = [], None
        for frame in clip:
            logits, state = reference(frame, state)
            expected_logits.append(logits)
    checks: list[tuple[str, StepRuntime, Any]] = [(name, runtime, nullcontext()) for name, runtime in runtimes.items()]
    if "eager" in runtimes and device.type == "cuda":
        checks.append(("eager (TF32 off)", runtimes["eager"], float32_exact()))
    for name, runtime, context in checks:
        try:
            with context, torch.inference_mode():
                random_error = step_disagreement(on_device(runtime), StreamStep(model_cpu).eval(), model_cpu, size)
                got, state = [], None
                for frame in clip:
                    logits, state = on_device(runtime)(frame, state)
                    got.append(logits)
            report["agreement"][name] = {"random_max": round(random_error, 6),
                                         **stream_agreement(torch.cat(got), torch.cat(expected_logits))}
        except Exception as error:
            report["errors"][f"agreement {name}"] = error_text(error)
        emit(report)

    throughput(runtimes, device, size, args, report)
    return 0


def stream_agreement(logits: Any, expected: Any) -> dict[str, float]:
    """Probability differences, stray mask pixels (> 1 level of 255) and mask IoU at 0.5."""
    p, q = logits.sigmoid(), expected.sigmoid()
    levels = ((p * 255).round() - (q * 255).round()).abs()
    a, b = p > 0.5, q > 0.5
    union = float((a | b).sum())
    return {"stream_max": round(float((p - q).abs().max()), 6), "stream_mean": round(float((p - q).abs().mean()), 7),
            "stray_share": round(float((levels > 1).float().mean()), 7),
            "iou": round(float((a & b).sum()) / union, 5) if union else 1.0}


def throughput(runtimes: dict[str, Any], device: Any, size: tuple[int, int], args: argparse.Namespace,
               report: dict[str, Any]) -> None:
    """frames/s per backend and batch: `--rounds` interleaved rounds (order rotating), the median
    round; each point runs for about `--point-s` seconds, timed between device synchronisations."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    names = list(runtimes)
    samples: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    with torch.inference_mode():
        inputs = {batch: torch.rand(batch, 3, *size, device=device) for batch in args.batches}
        states: dict[tuple[str, int], torch.Tensor] = {}
        calls: dict[tuple[str, int], int] = {}
        for batch in args.batches:
            for name in list(names):
                runtime = runtimes[name]
                try:  # first calls of a shape: kernels chosen, TensorRT engines built
                    started = time.perf_counter()
                    _, state = runtime(inputs[batch])
                    for _ in range(2):
                        _, state = runtime(inputs[batch], state)
                    sync()
                    report.setdefault("first_calls_s", {})[f"{name} b{batch}"] = round(time.perf_counter() - started, 2)
                    started = time.perf_counter()
                    for _ in range(3):
                        _, state = runtime(inputs[batch], state)
                    sync()
                except Exception as error:
                    report["errors"][f"{name} b{batch}"] = error_text(error)
                    names.remove(name)
                    continue
                per_call = (time.perf_counter() - started) / 3
                calls[name, batch] = max(3, int(args.point_s / max(per_call, 1e-6)))
                states[name, batch] = state
            emit(report)
        for index in range(args.rounds):
            for batch in args.batches:
                for name in names[index % max(1, len(names)):] + names[: index % max(1, len(names))]:
                    runtime, state, count = runtimes[name], states[name, batch], calls[name, batch]
                    sync()
                    started = time.perf_counter()
                    for _ in range(count):
                        _, state = runtime(inputs[batch], state)
                    sync()
                    states[name, batch] = state
                    samples[name].setdefault(batch, []).append(count * batch / (time.perf_counter() - started))
            report["fps"] = {name: {str(b): round(statistics.median(v)) for b, v in per.items()}
                             for name, per in samples.items() if per}
            if samples.get("eager"):
                report["fps_over_eager"] = {
                    name: {str(b): round(statistics.median(f / e for f, e in zip(v, samples["eager"][b], strict=True)), 3)
                           for b, v in per.items() if b in samples["eager"]}
                    for name, per in samples.items() if name != "eager" and per}
            report["rounds_done"] = index + 1
            emit(report)


# ---------------------------------------------------------------- stage: server


def stage_server(args: argparse.Namespace) -> int:
    """A real server on the device, then 1 and 16 (`--sessions`) lockstep WebSocket sessions."""
    import httpx
    from common import jpeg, start_server, stop_server
    from concurrency import load

    frames, source = sample_frames(60)
    payloads = [jpeg(frame) for frame in frames]
    height, width = frames[0].shape[:2]
    report: dict[str, Any] = {"stage": "server", "backend": args.backend, "device": args.device,
                              "frames": f"{width}x{height} JPEG q90 in ({source}), PNG out", "batch_size": args.batch_size,
                              "sessions": {}}
    emit(report)
    started = time.monotonic()
    server = start_server({"VSOD_MODEL_STORE": args.store}, VSOD_MODEL=args.model, VSOD_DEVICE=args.device,
                          VSOD_BACKEND=args.backend, VSOD_BATCH_SIZE=args.batch_size, VSOD_MAX_STREAM_FPS=0,
                          VSOD_MAX_STREAM_PIXELS_PER_S=0, VSOD_LOG_LEVEL="info")
    try:
        report["ready_s"] = round(time.monotonic() - started, 1)
        report["readyz"] = httpx.get(server.url + "/readyz", timeout=10).json()
        warming = [line for line in server.output().splitlines() if "warming up" in line]
        if warming:
            report["startup"] = warming[-1].split("warming up", 1)[1].strip()[:300]
        emit(report)
        for sessions in args.sessions:
            row = asyncio.run(load(server.ws_url, payloads, sessions, args.warmup_s, args.seconds, None))
            report["sessions"][str(sessions)] = {k: round(v, 2) for k, v in row.items()}
            emit(report)
    finally:
        stop_server(server)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    stage = argparse.ArgumentParser(add_help=False)
    stage.add_argument("--store", required=True)
    stage.add_argument("--model", required=True)
    stage.add_argument("--device", default="cuda")
    backends = sub.add_parser("backends", parents=[stage])
    backends.add_argument("--variants", nargs="+", default=["eager", "torchscript", "onnxruntime-cuda"])
    backends.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    backends.add_argument("--rounds", type=int, default=3)
    backends.add_argument("--point-s", type=float, default=0.4)
    backends.add_argument("--stream-frames", type=int, default=16)
    backends.add_argument("--probe-onnxruntime", action="store_true", help="report what `onnxruntime` picks here")
    server = sub.add_parser("server", parents=[stage])
    server.add_argument("--backend", default="torchscript")
    server.add_argument("--batch-size", type=int, default=16)
    server.add_argument("--sessions", type=int, nargs="+", default=[1, 16])
    server.add_argument("--seconds", type=float, default=6)
    server.add_argument("--warmup-s", type=float, default=2)
    args = parser.parse_args(argv)
    return stage_backends(args) if args.stage == "backends" else stage_server(args)


if __name__ == "__main__":
    sys.exit(main())
