"""Export a training checkpoint into the model store, with measured metrics, speed and a report.

    vsod-train export --checkpoint runs/s0/last.pt --name stkd-synth \
        --eval-root data/synth-val --eval-dataset davis --eval-split val

Everything in the manifest's metrics and in `report.md` is measured here or read from the
checkpoint (data, command, steps, training time, code commit); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill.data.provenance import root_provenance
from distill.export_stored import run_export_stored
from distill.measure import measure, measurement_sections, report_heading, save_measured
from distill.runs import (
    TrainConfig,
    command_line,
    git_revision,
    load_checkpoint,
    parse_size,
    warmup_steps,
)
from service.model import ARCHITECTURE, Manifest, ModelStore, STKDStudent, StudentConfig


def load_student(checkpoint: dict[str, Any]) -> STKDStudent:
    model = STKDStudent(StudentConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


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
                         + ", ".join(f"`{b}`" for b in entry.get("backgrounds", []))
                         + "".join(f"; some clips set in the photos of `{root}`" for root in entry.get("scenes", []))
                         + "".join(f"; {scene_style(style)}" for style in entry.get("styles", [])))
    for teacher in teachers.values():
        lines.append(f"- teacher: {teacher.get('model')}, {teacher.get('variant')} variant at {teacher.get('input_size')}x"
                     f"{teacher.get('input_size')}, sha256 `{teacher.get('sha256')}`; model licence "
                     f"{teacher.get('model_licence')}; from {teacher.get('package')}, licence {teacher.get('package_licence')}")
    return ["", "Sources:", "", *lines] if lines else []


def scene_style(style: dict[str, Any]) -> str:
    """A composite split's SceneStyle in words (distill.data.synthetic.SceneStyle.to_record)."""
    low, high = style["object_size"]
    return f"objects {low:g}-{high:g} of the short side, {style['defocus_share']:.0%} of clips defocused"


def build_report(manifest: Manifest, checkpoint: dict[str, Any], evaluation: dict[str, Any] | None,
                 speed: dict[str, Any], machine: dict[str, Any], notes: str | None) -> str:
    config = TrainConfig.from_dict(checkpoint["config"])
    lineage = checkpoint.get("lineage", {})
    lines = report_heading(manifest, notes)
    lines += ["## Training", "", "| dataset | root | split | sequences | frames | annotated frames |",
              "|---|---|---|---|---|---|"]
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
        f"- student: width multiplier {config.width_mult}, "
        f"{sum(p.numel() for p in load_student(checkpoint).parameters()):,} parameters",
        *([f"- fine-tuned from `{lineage['init_from'].get('path')}` (weights sha256 `{lineage['init_from'].get('sha256')}`)"]
          if lineage.get("init_from") else []),
        (f"- optimiser: AdamW, peak lr {config.lr}, weight decay {config.weight_decay}, "
        f"{warmup_steps(config, checkpoint['total_steps'])}-step warm-up, cosine decay; seed {config.seed}"),
        (f"- last logged loss: {last['loss']:.4f} (BCE {last['bce']:.4f}, IoU {last['iou']:.4f} on the final map)"
         if last else "- last logged loss: -"),
        f"- code: commit `{git.get('commit')}`" + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- started {lineage.get('started', '?')}, checkpoint saved {checkpoint.get('saved', '?')}",
        "",
        "Command:" if len(lineage.get("commands", [])) <= 1 else "Commands, in order (the later ones resumed the run):",
        "",
        "```bash",
        *lineage.get("commands", ["(not recorded)"]),
        "```",
        "",
        *measurement_sections(manifest, evaluation, speed, machine),
    ]
    return "\n".join(lines)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="write a training checkpoint into the model store (manifest, weights, report)",
        description="Export RUN_DIR/last.pt into the model store: weights, a manifest with lineage and measured "
        "metrics (optional evaluation incl. the frame-difference baseline, CPU ms/frame with 2 threads) and report.md.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="training checkpoint, e.g. RUN_DIR/last.pt")
    source.add_argument("--from-model", metavar="NAME",
                        help="a stored model instead: its weights served at --input-size, everything measured again "
                        "(distill/export_stored.py)")
    parser.add_argument("--from-store", default=None, help="the model store of --from-model (default: --store)")
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--store", default=None, help="model store folder (default $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--version", default="1", help="model version string in the manifest (default 1)")
    parser.add_argument("--input-size", default=None,
                        help="inference input N or HxW (default: the training size; needed with --from-model)")
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
    if args.from_model:
        return run_export_stored(args, store)
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
        created=datetime.now(UTC).isoformat(timespec="seconds"),
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
    evaluation, speed, machine = measure(model, manifest, args)
    save_measured(store, model, manifest, args,
                  lambda: build_report(manifest, checkpoint, evaluation, speed, machine, args.notes))
    return 0
