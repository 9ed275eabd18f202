"""Export a training checkpoint into the model store, with measured metrics, speed and a report.

    vsod-train export --checkpoint runs/s0/last.pt --name stkd-synth \
        --eval-root data/synth-val --eval-dataset davis --eval-split val

Everything in the manifest's metrics and in `report.md` is measured here or read from the
checkpoint (data, command, steps, training time, code commit); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from distill.data.provenance import root_provenance
from distill.runs import (
    TrainConfig,
    command_line,
    git_revision,
    load_checkpoint,
    parse_size,
    warmup_steps,
)
from service.model import (
    ARCHITECTURE,
    Manifest,
    ModelStore,
    Predictor,
    STKDStudent,
    StudentConfig,
)
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


def load_student(checkpoint: dict[str, Any]) -> STKDStudent:
    model = STKDStudent(StudentConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


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


def data_sources(data: list[dict[str, Any]]) -> list[str]:
    """Report lines naming what each teacher-labelled or composite root came from, and the teacher."""
    lines: list[str] = []
    teachers = {json.dumps(d["teacher"], sort_keys=True): d["teacher"] for d in data if d.get("teacher")}
    for entry in data:
        if entry.get("sources"):
            lines.append(f"- `{entry['root']}`: the teacher's soft maps of " + ", ".join(f"`{s}`" for s in entry["sources"]))
        if entry.get("cutouts"):
            lines.append(f"- `{entry['root']}`: objects cut out of " + ", ".join(f"`{c}`" for c in entry["cutouts"])
                         + f" by the teacher's maps, over {len(entry.get('backgrounds', []))} backgrounds: "
                         + ", ".join(f"`{b}`" for b in entry.get("backgrounds", [])))
    for teacher in teachers.values():
        lines.append(f"- teacher: {teacher.get('model')}, {teacher.get('variant')} variant at {teacher.get('input_size')}x"
                     f"{teacher.get('input_size')}, sha256 `{teacher.get('sha256')}`; model licence "
                     f"{teacher.get('model_licence')}; from {teacher.get('package')}, licence {teacher.get('package_licence')}")
    return ["", "Sources:", "", *lines] if lines else []


def build_report(manifest: Manifest, checkpoint: dict[str, Any], evaluation: dict[str, Any] | None,
                 speed: dict[str, Any], machine: dict[str, Any], notes: str | None) -> str:
    config = TrainConfig.from_dict(checkpoint["config"])
    lineage = checkpoint.get("lineage", {})
    lines = [f"# Model `{manifest.name}` (version {manifest.version})", ""]
    if notes:
        lines += [notes, ""]
    lines += ["## Training", "", "| dataset | root | split | sequences | frames | annotated frames |", "|---|---|---|---|---|---|"]
    for data in lineage.get("data", []):
        share = f" ({data['share']:.0%} of the samples)" if "share" in data else ""
        lines.append(f"| {data['dataset']}{share} | `{data['root']}` | {data['split']} | {data['sequences']} | {data['frames']} "
                     f"| {data['annotated_frames']} |")
    lines += data_sources(lineage.get("data", []))
    hours, rest = divmod(int(checkpoint["training_seconds"]), 3600)
    per_step = checkpoint["training_seconds"] / max(1, checkpoint["step"])
    last = checkpoint.get("last_terms") or {}
    git = lineage.get("git", {})
    lines += [
        "",
        (f"- steps: {checkpoint['step']} of a {checkpoint['total_steps']}-step schedule, "
        f"{config.batch} clips of {config.clip_len} frames per step at {config.input_size[0]}x{config.input_size[1]}"),
        (f"- training time: {hours} h {rest // 60:02d} min {rest % 60:02d} s ({per_step:.2f} s/step, "
        f"{config.batch / per_step:.2f} clips/s including data loading)"),
        f"- student: width multiplier {config.width_mult}, {sum(p.numel() for p in load_student(checkpoint).parameters()):,} parameters",
        *([f"- fine-tuned from `{lineage['init_from'].get('path')}` (weights sha256 `{lineage['init_from'].get('sha256')}`)"]
          if lineage.get("init_from") else []),
        (f"- optimiser: AdamW, peak lr {config.lr}, weight decay {config.weight_decay}, "
        f"{warmup_steps(config, checkpoint['total_steps'])}-step warm-up, cosine decay; seed {config.seed}"),
        f"- last logged loss: {last['loss']:.4f} (BCE {last['bce']:.4f}, IoU {last['iou']:.4f} on the final map)" if last else "- last logged loss: -",
        f"- code: commit `{git.get('commit')}`" + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- started {lineage.get('started', '?')}, checkpoint saved {checkpoint.get('saved', '?')}",
        "",
        "Command:" if len(lineage.get("commands", [])) <= 1 else "Commands, in order (the later ones resumed the run):",
        "",
        "```bash",
        *lineage.get("commands", ["(not recorded)"]),
        "```",
        "",
        "## Evaluation",
        "",
    ]
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
    return "\n".join(lines)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="write a training checkpoint into the model store (manifest, weights, report)",
        description="Export RUN_DIR/last.pt into the model store: weights, a manifest with lineage and measured "
        "metrics (optional evaluation incl. the frame-difference baseline, CPU ms/frame with 2 threads) and report.md.",
    )
    parser.add_argument("--checkpoint", required=True, help="training checkpoint, e.g. RUN_DIR/last.pt")
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--store", default=None, help="model store folder (default $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--version", default="1", help="model version string in the manifest (default 1)")
    parser.add_argument("--input-size", default=None, help="inference input N or HxW (default: the training size)")
    parser.add_argument("--eval-root", default=None, help="evaluate on this dataset root before writing")
    parser.add_argument("--eval-dataset", default="davis", help="layout of --eval-root (default davis)")
    parser.add_argument("--eval-split", default=None, help="split of --eval-root (e.g. val)")
    parser.add_argument("--eval-max-sequences", type=int, default=None, help="evaluate only the first N sequences")
    parser.add_argument("--speed-frames", type=int, default=50, help="frames timed for CPU ms/frame (default 50)")
    parser.add_argument("--notes", default=None, help="free text placed at the top of report.md")
    parser.add_argument("--force", action="store_true", help="replace a model of the same name")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run_export)

    graph = commands.add_parser(
        "export-graph",
        help="add (or renew) a stored model's ONNX step graph, which the onnxruntime backend serves",
        description="Export a stored model's streaming step to NAME/step.onnx, check it against the eager model "
        "and record its sha256, opset and shapes in the manifest (`vsod-train export` does this for new models).",
    )
    graph.add_argument("name", help="model name in the store")
    graph.add_argument("--store", default=None, help="model store folder (default $VSOD_MODEL_STORE or ./model_store)")
    graph.set_defaults(func=run_export_graph)


def run_export_graph(args: argparse.Namespace) -> int:
    record = ModelStore(args.store).add_step_graph(args.name)
    print(f"{args.name}: wrote {record['file']} ({record['format']}, sha256 {record['sha256'][:12]}…, largest "
          f"probability difference from eager {record['max_probability_error']:.1e})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise ValueError(f"--name {args.name!r} is not a valid model name")
    store = ModelStore(args.store)
    args.store = store.root
    if (store.root / args.name).exists() and not args.force:
        raise ValueError(f"model {args.name!r} already exists in {store.root}: choose another --name or pass --force")
    if args.eval_root and not Path(args.eval_root).is_dir():
        raise FileNotFoundError(f"evaluation root not found: {args.eval_root}")
    if args.speed_frames < 1:
        raise ValueError("--speed-frames must be at least 1")
    checkpoint = load_checkpoint(Path(args.checkpoint))
    if checkpoint.get("kind", "student") != "student":
        raise ValueError(f"{args.checkpoint} holds a {checkpoint['kind']}: only students go to the model store")
    config = TrainConfig.from_dict(checkpoint["config"])
    input_size = parse_size(args.input_size) if args.input_size else config.input_size
    model = load_student(checkpoint)
    lineage = checkpoint.get("lineage", {})
    # Runs from before the lineage carried them: the roots' own sidecars, where they are still there.
    data = [entry if "teacher" in entry or "cutouts" in entry else {**entry, **root_provenance(entry["root"])}
            for entry in lineage.get("data", [])]
    checkpoint = {**checkpoint, "lineage": {**lineage, "data": data}}
    lineage = checkpoint["lineage"]
    manifest = Manifest(
        name=args.name,
        architecture=ARCHITECTURE,
        config=model.config.to_dict(),
        input_size=input_size,
        version=args.version,
        sha256="",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        lineage={
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "data": lineage.get("data", []),
            "seed": config.seed,
            "steps": checkpoint["step"],
            "total_steps": checkpoint["total_steps"],
            "training_seconds": round(checkpoint["training_seconds"], 1),
            "train_config": checkpoint["config"],
            "commands": lineage.get("commands", []),
            "git": lineage.get("git", {}),
            # Fine-tuned students: the model they started from (path, weights' sha256).
            **({"init_from": lineage["init_from"]} if "init_from" in lineage else {}),
            # Distilled students: the teachers (path, sha256, steps) and KD weights they learnt from.
            **({"distillation": lineage["distillation"]} if "distillation" in lineage else {}),
            "export": {"command": command_line(), "git": git_revision()},
        },
    )
    speed = measure_cpu_speed(model, input_size, frames=args.speed_frames)
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
    folder = store.save(model, manifest)  # fills in manifest.sha256
    (folder / REPORT).write_text(build_report(manifest, checkpoint, evaluation, speed, machine, args.notes))
    store.load(args.name)  # what was written must verify, or the export is not done
    summary = f"exported {manifest.model_id} to {folder}: {speed['cpu_ms_per_frame']:.1f} ms/frame on CPU ({SPEED_THREADS} threads)"
    if evaluation:
        summary += (f"; S={evaluation['student']['s_measure']:.4f} (frame difference "
                    f"{evaluation['framediff']['s_measure']:.4f}) on {evaluation['student']['sequences']} sequences")
    print(summary, file=sys.stdout)
    return 0
