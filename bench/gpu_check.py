"""The GPU check: CUDA tests, backend agreement, frames/s per backend, 16 live sessions on a GPU server.

    bash bench/gpu_check.sh                         # what a machine with an NVIDIA GPU runs (< 5 minutes)
    python bench/gpu_check.py --dry-run-cpu         # the same machinery on the CPU, small: for working on this script

Needs, installed beforehand (the GPU machine may have no internet): the CUDA build of PyTorch and
this checkout (`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128`, then
`pip install -e ".[test]"`); optionally `onnxruntime-gpu` for ONNX Runtime's CUDA provider (it and
the CPU `onnxruntime` share one import name: `pip uninstall -y onnxruntime` first), and TensorRT's
libraries for its TensorRT provider. Without onnxruntime-gpu the ONNX Runtime rows say so and the
rest still runs. Without a GPU (no `nvidia-smi`, or torch sees no CUDA device) it prints one JSON
line, `{"skipped": "no CUDA GPU: ..."}`, and exits 0 at once.

The shipped model's weights are exported at 352x352 (the issue's GPU size; the shipped graph is
256x256) to a temporary store, `ModelStore(tmp).save(model, manifest at 352x352)`, which the stages
share. Each stage is a subprocess with its own time limit inside one overall budget (`--budget-s`),
so a hung stage (a TensorRT engine build, a server that never gets ready) costs only its own
figures; stages print a cumulative JSON line after each step, and a stage that runs out of time
keeps what it had printed:

- `backends`: eager float32, `torchscript` (on CUDA: float16, mode cuda-fp16) and ONNX Runtime with
  its CUDA provider alone, each built by `StepRuntime` as a server builds it. Agreement with the
  float32 model on the CPU (the largest probability difference on the runtime's agreement examples,
  then over a 16-frame stream of real or synthetic frames: largest and mean difference, share of
  8-bit mask pixels that moved by more than one level, IoU of the masks at 0.5; eager also with TF32
  off). Then frames/s at batch 1, 8 and 32, the backends interleaved in rounds (the median round).
- `tensorrt`: `onnxruntime` exactly as a server builds it, when that is TensorRT (the provider comes
  first where it loads), measured the same way; TensorRT builds an engine for each new input shape.
- `tests`: `pytest -m cuda tests/test_cuda.py`.
- `server-<backend>`: a real server (`vsod serve`) on the GPU with `VSOD_BATCH_SIZE=16` and sessions
  in the process, then 1 and 16 WebSocket sessions in lockstep (bench/concurrency.py's client):
  frames/s, p50/p95 latency, mean batch.

Prints one JSON line at the end with everything; exit status 1 if a test failed or a stage broke.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from tests.devices import float32_exact  # noqa: E402

SHIPPED = "vsod-student"
EXPORTED = "vsod-student-gpu-check"
CUDA_MODES = {"eager": "eager", "torchscript": "cuda-fp16", "onnxruntime-cuda": "onnxruntime-cuda",
              "onnxruntime": "onnxruntime-tensorrt"}
CPU_MODES = {"eager": "eager", "torchscript": "torchscript", "onnxruntime": "onnxruntime-cpu"}


# ---------------------------------------------------------------- shared


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
    sys.path.insert(0, str(BENCH))
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

    sys.path.insert(0, str(BENCH))
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


# ---------------------------------------------------------------- the driver


def skipped(reason: str) -> int:
    print(json.dumps({"bench": "gpu_check", "skipped": f"no CUDA GPU: {reason}"}))
    return 0


def nvidia_smi() -> dict[str, str] | str:
    """The GPU as nvidia-smi names it, or why there is none."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed: {error_text(error)}"
    if result.returncode != 0 or not result.stdout.strip():
        return f"nvidia-smi failed: {(result.stderr or result.stdout).strip()[:200]}"
    name, driver, memory = (part.strip() for part in ([*result.stdout.strip().splitlines()[0].split(","), "", ""])[:3])
    return {"name": name, "driver": driver, "memory": memory, "count": str(len(result.stdout.strip().splitlines()))}


def run_process(command: list[str], timeout: float) -> tuple[int | None, str, bool, float]:
    """Run a command in its own process group -> (exit status, output, timed out, seconds). On
    timeout the whole group (a server it started too) is stopped; its output so far is kept."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            process.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        out.seek(0)
        text = out.read().decode(errors="replace")
    return process.returncode, text, timed_out, round(time.monotonic() - started, 1)


def run_stage(command: list[str], timeout: float) -> dict[str, Any]:
    """A stage's last JSON line, with how it ended (and its output's tail if it went wrong)."""
    rc, text, timed_out, seconds = run_process(command, timeout)
    result: dict[str, Any] = {}
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    result.update(rc=rc, seconds=seconds)
    if timed_out:
        result["timed_out"] = f"stopped after {timeout:.0f} s"
    if rc != 0 or timed_out or not result.get("stage"):
        result["output_tail"] = text[-1500:]
    return result


def pytest_outcomes(text: str) -> dict[str, Any]:
    """Per-test outcomes from `pytest -v` output (complete even if the run was stopped midway)."""
    outcomes = dict(re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.MULTILINE))
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.lower()] = counts.get(outcome.lower(), 0) + 1
    details = [line[:300] for line in text.splitlines() if re.match(r"^(FAILED|ERROR|SKIPPED) ", line)]
    return {"counts": counts, "tests": {name.split("::", 1)[1]: outcome for name, outcome in outcomes.items()},
            "details": details}


def run_tests(timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    rc, text, timed_out, seconds = run_process(command, timeout)
    tests = {"stage": "tests", "command": "pytest -m cuda tests/test_cuda.py", "rc": rc, "seconds": seconds,
             **pytest_outcomes(text)}
    if timed_out:
        tests["timed_out"] = f"stopped after {timeout:.0f} s"
    if not tests["counts"] or rc not in (0, None):
        tests["output_tail"] = text[-1500:]
    return tests


def export_store(root: Path, size: tuple[int, int]) -> str:
    """The shipped model's weights with a step graph at `size`, saved to a store at `root`."""
    from service.model import ModelStore

    model, manifest = ModelStore(REPO / "model_store").load(SHIPPED)
    ModelStore(root).save(model, dataclasses.replace(manifest, name=EXPORTED, input_size=size),
                          report=f"# {SHIPPED} at {size[0]}x{size[1]}\nbench/gpu_check.py's temporary copy.\n")
    return manifest.model_id


def versions() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import onnxruntime

        info.update(onnxruntime=onnxruntime.__version__, providers=onnxruntime.get_available_providers())
    except ImportError as error:
        info["onnxruntime"] = error_text(error)
    return info


def driver(args: argparse.Namespace, argv: list[str] | None) -> int:
    began = time.monotonic()
    deadline = began + args.budget_s
    gpu: dict[str, str] | str = "dry run on the CPU" if args.dry_run_cpu else nvidia_smi()
    if isinstance(gpu, str) and not args.dry_run_cpu:
        return skipped(gpu)
    import torch

    if not args.dry_run_cpu and not torch.cuda.is_available():
        return skipped(f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no CUDA device")
    device = "cpu" if args.dry_run_cpu else "cuda"
    size = (args.size, args.size)
    summary: dict[str, Any] = {"bench": "gpu_check", "ok": False, "device": device, "gpu": gpu, **versions(),
                               "input": list(size), "stages": {}}
    stages: dict[str, Any] = summary["stages"]
    me = [sys.executable, str(Path(__file__).resolve())]

    def left(reserve: float = 0.0) -> float:
        return deadline - time.monotonic() - reserve

    with tempfile.TemporaryDirectory(prefix="vsod-gpu-check-") as root:
        started = time.monotonic()
        summary["model"] = f"{export_store(Path(root), size)} exported at {size[0]}x{size[1]}"
        summary["export_s"] = round(time.monotonic() - started, 1)
        common = ["--store", root, "--model", EXPORTED, "--device", device]
        has_cuda_provider = "CUDAExecutionProvider" in summary.get("providers", [])
        variants = ["eager", "torchscript"] + (["onnxruntime" if args.dry_run_cpu else "onnxruntime-cuda"]
                                               if args.dry_run_cpu or has_cuda_provider else [])
        if not args.dry_run_cpu and not has_cuda_provider:
            summary["onnxruntime_cuda"] = f"not measured: no CUDA provider in {summary.get('providers')} (onnxruntime-gpu)"
        # Order: the figures first, then the tests, then a server; what may build TensorRT engines last.
        stages["backends"] = run_stage([*me, "backends", *common, "--variants", *variants, "--batches",
                                        *map(str, args.batches), "--rounds", str(args.rounds), "--point-s",
                                        str(args.point_s), *(["--probe-onnxruntime"] if has_cuda_provider else [])],
                                       min(90, left(reserve=120)))
        stages["tests"] = run_tests(min(100, left(reserve=60)))  # on the CPU they skip: the parsing still runs
        server_args = ["--sessions", *map(str, args.sessions), "--seconds", str(args.seconds), "--warmup-s", "2"]
        stages["server-torchscript"] = run_stage([*me, "server", *common, "--backend", "torchscript", *server_args],
                                                 min(75, left(reserve=5)))
        as_built = stages["backends"].get("onnxruntime_as_built", "")
        if as_built == "onnxruntime-tensorrt":
            if left() > 40:
                stages["tensorrt"] = run_stage([*me, "backends", *common, "--variants", "onnxruntime", "--batches",
                                                *map(str, args.batches), "--rounds", "1", "--point-s",
                                                str(args.point_s)], min(60, left(reserve=5)))
            else:
                stages["tensorrt"] = {"skipped": "out of time"}
        if has_cuda_provider or args.dry_run_cpu:
            name = "server-onnxruntime"
            if left() > 45:
                stages[name] = run_stage([*me, "server", *common, "--backend", "onnxruntime", *server_args],
                                         min(75, left(reserve=5)))
            else:
                stages[name] = {"skipped": "out of time"}
    tests = stages.get("tests", {"rc": 0})
    broken = [name for name, stage in stages.items()
              if stage.get("rc") not in (0, None) or stage.get("timed_out") or stage.get("errors")]
    summary["ok"] = tests.get("rc") == 0 and not broken
    summary["problems"] = broken
    fp16 = stages["backends"].get("fps", {}).get("torchscript", {})
    if fp16 and not args.dry_run_cpu:
        summary["target_1000_fps_fp16_352"] = {"best_fps": max(fp16.values()), "met": max(fp16.values()) >= 1000}
    sys.path.insert(0, str(BENCH))
    from common import machine

    summary.update(elapsed_s=round(time.monotonic() - began, 1), budget_s=args.budget_s, machine=machine(),
                   date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   command=" ".join(["bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]))
    print(json.dumps(summary, default=str))
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=280, help="the whole check's time limit")
    parser.add_argument("--dry-run-cpu", action="store_true", help="no GPU needed: CPU backends, small sizes")
    parser.add_argument("--size", type=int, default=352, help="square input size of the exported graph")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--point-s", type=float, default=0.4, help="seconds per timed point")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=6, help="measured seconds per session count")
    sub = parser.add_subparsers(dest="stage")
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
    if args.stage == "backends":
        return stage_backends(args)
    if args.stage == "server":
        return stage_server(args)
    if args.dry_run_cpu:
        args.size = min(args.size, 128)
        args.batches, args.rounds, args.point_s, args.sessions, args.seconds = [1, 4], 2, 0.2, [1, 4], 3
    return driver(args, argv)


if __name__ == "__main__":
    sys.exit(main())
