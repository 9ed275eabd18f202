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

The shipped model's weights are exported at 352x352 (the issue's GPU size; the shipped graph is at
the model's own input size) to a temporary store, `ModelStore(tmp).save(model, manifest at 352x352)`,
which the stages share. Each stage (bench/gpu_stages.py) is a subprocess with its own time limit
inside one overall budget (`--budget-s`), so a hung stage (a TensorRT engine build, a server that
never gets ready) costs only its own figures; stages print a cumulative JSON line after each step,
and a stage that runs out of time keeps what it had printed:

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
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
STAGES = BENCH / "gpu_stages.py"  # the stages this driver runs, each in its own process
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(BENCH))

from gpu_stages import error_text  # noqa: E402

SHIPPED = "vsod-student"
EXPORTED = "vsod-student-gpu-check"


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
    me = [sys.executable, str(STAGES)]

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
    args = parser.parse_args(argv)
    if args.dry_run_cpu:
        args.size = min(args.size, 128)
        args.batches, args.rounds, args.point_s, args.sessions, args.seconds = [1, 4], 2, 0.2, [1, 4], 3
    return driver(args, argv)


if __name__ == "__main__":
    sys.exit(main())
