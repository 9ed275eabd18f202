"""What an export measures and writes beside the weights: CPU speed, the evaluation, the machine,
and the report's sections about them. Shared by `vsod-train export` from a checkpoint (distill.export)
and from a stored model (distill.export_stored).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.runs import command_line
from service.model import Manifest, ModelStore, Predictor, STKDStudent
from service.model.store import REPORT

SPEED_THREADS = 2


@torch.inference_mode()
def measure_cpu_speed(model: STKDStudent, input_size: tuple[int, int], threads: int = SPEED_THREADS,
                      frames: int = 50, warmup: int = 5) -> dict[str, Any]:
    """Median CPU milliseconds per streamed frame (a previous-frame state carried, as in a stream)."""
    model = model.eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        frame = torch.rand(1, 3, *input_size)
        state = None
        timings = []
        for index in range(warmup + frames):
            start = time.perf_counter()
            state = model(frame, state).state
            if index >= warmup:
                timings.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
    median = statistics.median(timings)
    return {"cpu_ms_per_frame": round(median, 2), "cpu_fps": round(1000 / median, 1), "cpu_threads": threads,
            "input_size": list(input_size), "frames_timed": frames}


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU model and count, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # Measured speed is only meaningful next to how busy the machine was.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def evaluate_export(model: STKDStudent, manifest: Manifest, args: argparse.Namespace) -> dict[str, Any]:
    """Student and frame-difference baseline on the evaluation set, through `evaluate_sequences`."""
    from distill.baselines import frame_difference_clip
    from distill.data.loaders import load_sequences
    from distill.evaluate import evaluate_sequences

    sequences = load_sequences(args.eval_dataset, args.eval_root, args.eval_split, args.eval_max_sequences)
    predictor = Predictor(model, manifest, device="cpu")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(SPEED_THREADS)
    try:
        student = evaluate_sequences(predictor.predict_clip, sequences, progress=not args.no_progress, desc="student")
    finally:
        torch.set_num_threads(previous_threads)
    baseline = evaluate_sequences(frame_difference_clip, sequences, progress=not args.no_progress, desc="framediff")
    command = ["vsod-train", "eval", "--dataset", args.eval_dataset, "--root", str(args.eval_root)]
    if args.eval_split:
        command += ["--split", args.eval_split]
    if args.eval_max_sequences:
        command += ["--max-sequences", str(args.eval_max_sequences)]
    command += ["--model", manifest.name, "--store", str(args.store), "--baseline", "framediff", "--threads", str(SPEED_THREADS)]
    return {
        "dataset": args.eval_dataset,
        "root": str(Path(args.eval_root).resolve()),
        "split": args.eval_split,
        "command": shlex.join(command),
        "student": student,
        "framediff": baseline,
    }


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("s_measure", "max_f", "mean_e", "mae", "sequences", "frames_scored", "fps_model", "fps_end_to_end")
    return {key: result[key] for key in keys}


def measure(model: STKDStudent, manifest: Manifest,
            args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """(evaluation or None, speed, machine) at the manifest's input size; fills in `manifest.metrics`."""
    speed = measure_cpu_speed(model, manifest.input_size, frames=args.speed_frames)
    evaluation = evaluate_export(model, manifest, args) if args.eval_root else None
    machine = machine_info()
    metrics: dict[str, Any] = {}
    if evaluation:
        metrics.update({k: evaluation["student"][k] for k in ("s_measure", "max_f", "mean_e", "mae")})
    metrics.update(speed=speed, machine=machine)
    if evaluation:
        metrics["eval"] = {
            **{k: evaluation[k] for k in ("dataset", "root", "split", "command")},
            "student": _headline(evaluation["student"]),
            "baselines": {"framediff": _headline(evaluation["framediff"])},
        }
    manifest.metrics = metrics
    return evaluation, speed, machine


def save_measured(store: ModelStore, model: STKDStudent, manifest: Manifest, args: argparse.Namespace,
                  report: Callable[[], str]) -> None:
    """Weights, step graph and manifest, then the report (which names their hashes), then a verifying load."""
    folder = store.save(model, manifest)  # fills in manifest.sha256
    (folder / REPORT).write_text(report())
    store.load(args.name)  # what was written must verify, or the export is not done
    speed, evaluation = manifest.metrics["speed"], manifest.metrics.get("eval")
    summary = (f"exported {manifest.model_id} to {folder}: {speed['cpu_ms_per_frame']:.1f} ms/frame on CPU "
               f"({SPEED_THREADS} threads)")
    if evaluation:
        summary += (f"; S={evaluation['student']['s_measure']:.4f} (frame difference "
                    f"{evaluation['baselines']['framediff']['s_measure']:.4f}) on {evaluation['student']['sequences']} sequences")
    print(summary, file=sys.stdout)


def report_heading(manifest: Manifest, notes: str | None) -> list[str]:
    """The report's title, and the exporter's notes under it when given."""
    lines = [f"# Model `{manifest.name}` (version {manifest.version})", ""]
    return [*lines, notes, ""] if notes else lines


def measurement_sections(manifest: Manifest, evaluation: dict[str, Any] | None, speed: dict[str, Any],
                         machine: dict[str, Any]) -> list[str]:
    """The report's Evaluation, Speed, Machine and Files sections: what this export measured and wrote."""
    lines = ["## Evaluation", ""]
    if evaluation:
        student, baseline = evaluation["student"], evaluation["framediff"]
        lines += [
            (f"{evaluation['dataset']} layout, split `{evaluation['split']}` at `{evaluation['root']}`: "
            f"{student['sequences']} sequences, {student['frames_scored']} scored frames. DAVSOD protocol "
            "(per sequence, frames with ground truth except the first and last; sequence means averaged), "
            "metrics from pysodmetrics."),
            "",
            "| method | S-measure | max F (β²=0.3) | mean E | MAE | fps (model) | fps (end to end) |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, result in (("student", student), ("frame difference", baseline)):
            lines.append(f"| {label} | {result['s_measure']:.4f} | {result['max_f']:.4f} | {result['mean_e']:.4f} "
                         f"| {result['mae']:.4f} | {result['fps_model']:.1f} | {result['fps_end_to_end']:.1f} |")
        lines += ["", "Measured with the equivalent of:", "", "```bash", evaluation["command"], "```", ""]
    else:
        lines += ["Not evaluated at export (no `--eval-root`).", ""]
    lines += [
        "## Speed",
        "",
        (f"{speed['cpu_ms_per_frame']:.2f} ms per frame ({speed['cpu_fps']:.1f} fps) on the CPU with {speed['cpu_threads']} "
        f"threads at the model's input size {speed['input_size'][0]}x{speed['input_size'][1]}: median of "
        f"{speed['frames_timed']} streamed frames (previous-frame state carried), batch 1, after warm-up."),
        "",
        "## Machine",
        "",
        f"- {machine['cpu']}, {machine['cpu_count']} logical CPUs",
        f"- {machine['platform']}, Python {machine['python']}, torch {machine['torch']}",
        f"- load average (1, 5, 15 min) at export: {machine['load_average']} on {machine['cpu_count']} CPUs "
        "(a load above the CPU count means other jobs shared the CPU during these measurements)"
        if machine.get("load_average") else "- load average: not available",
        f"- exported {manifest.created} by `{command_line()}`",
        "",
        "## Files",
        "",
        f"- `weights.safetensors` sha256 `{manifest.sha256}`",
        *([f"- `{manifest.step_graph['file']}` sha256 `{manifest.step_graph['sha256']}`: the streaming step for "
           f"ONNX Runtime ({manifest.step_graph['format']}, dynamic batch; largest probability difference from "
           f"the eager model in the export check {manifest.step_graph['max_probability_error']:.1e})"]
          if manifest.step_graph else []),
        "",
    ]
    return lines
