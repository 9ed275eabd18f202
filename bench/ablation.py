"""The distillation ablation, end to end: teachers, student alone, +SKD, +TKD, +SKD+TKD, one table.

    # the real run (hours on 2 CPU cores), unattended; rerun the same line to continue after a stop:
    OMP_WAIT_POLICY=PASSIVE nohup python bench/ablation.py --out runs/ablation \
        --train-data /work/data/synth --train-data /work/data/synth2 --val-root /work/data/synth \
        > runs/ablation.out 2>&1 &
    python bench/ablation.py --out /tmp/ablation-quick --quick     # smoke run: every stage, a few steps
    # the run reported in model_store/vsod-student/report.md (about 2 h here, with other jobs):
    ... --spatial-steps 600 --temporal-steps 250 --student-steps 600

Every command and budget is in `stages()` below, nothing elsewhere. The four students get the same
budget (steps, batch, clip length, input size, learning rate, seed: the same initial weights and the
same samples in the same order), so they differ only by their KD terms; the teachers' budgets are
listed in the table too. Stages run in order as `vsod-train` subprocesses (logs in OUT/logs/); a
stage whose run finished is skipped and an interrupted run is resumed (--resume), so the script can
be started again after any stop. Then every model is scored on the same validation set by
`vsod-train eval` (MAE, S-measure, max F, mean E, flicker), timed at 352x352 on the CPU in this one
process (`stream_ms_per_frame`, 2 threads), and the table goes to OUT/ablation.md (printed too); the
last line printed is one JSON object with every number, the commands and the machine.

Expect several hours on 2 otherwise idle cores (rough estimate from single-step timings on a busy
machine: teachers ~2-4 h together, each student 0.5-1.5 h; each run's train_log.jsonl shows its
s/step, `--scale` shortens every run). Disk: the teacher cache grows to ~22 GB during the
distillation runs (the spatial teacher's stride-4 features, 1.5 MiB per 256x256 clip of 3 frames)
and is removed after the last one unless --keep-cache; --no-cache trades it for recomputing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

if TYPE_CHECKING:  # torch and the models are imported when a stage needs them
    from service.model.network import ClipNetwork

SPEED_SIZE = (352, 352)
SPEED_THREADS = 2


@dataclass
class Stage:
    name: str
    args: list[str]  # vsod-train arguments
    run_dir: Path | None = None  # training stages: resumable run folder
    creates: Path | None = None  # other stages: done when this exists
    row: str | None = None  # the table row a training stage or an evaluation belongs to
    extra: dict[str, Any] = field(default_factory=dict)

    def command(self) -> str:
        return shlex.join(["vsod-train", *self.args])


def budgets(quick: bool, scale: float, overrides: dict[str, int | None]) -> dict[str, Any]:
    """Steps and sizes of every run. Full: the default model's recipe (256 px, 8 clips of 3 frames,
    1800 steps) for each student; the spatial teacher sees 24 single frames per step (the same frames
    per step as a student), the temporal teacher 8 clips of its 3-frame window, starting from the
    spatial teacher. `overrides` sets one kind of run's steps outright (e.g. to give the teachers a
    larger share of a short budget than --scale would)."""
    if quick:
        return {"size": "64", "batch": 2, "spatial_batch": 6, "spatial_steps": 3, "temporal_steps": 3,
                "student_steps": 3, "warmup": 1, "save_every": 2}
    steps = {"spatial_steps": 3000, "temporal_steps": 1500, "student_steps": 1800}
    steps = {k: max(1, round(overrides.get(k) or v * scale)) for k, v in steps.items()}
    return {"size": "256", "batch": 8, "spatial_batch": 24, "warmup": min(100, steps["temporal_steps"] // 3),
            "save_every": 50, **steps}


def stages(args: argparse.Namespace) -> list[Stage]:
    overrides = {"spatial_steps": args.spatial_steps, "temporal_steps": args.temporal_steps,
                 "student_steps": args.student_steps}
    out, b = args.out, budgets(args.quick, args.scale, overrides)
    runs, data_args = out / "runs", []
    threads = ["--threads", str(args.threads), "--no-progress", "--save-every", str(b["save_every"])]
    plan: list[Stage] = []
    if args.train_data:
        for root in args.train_data:
            data_args += ["--data", str(root)]
    else:  # synthetic data of our own, written once
        data = out / "data"
        sequences, frames, size = (3, 6, "96x128") if args.quick else (300, 24, "270x480")
        plan.append(Stage("synth-train", ["synth", "--out", str(data), "--sequences", str(sequences), "--frames",
                                          str(frames), "--size", size, "--seed", "0", "--split", "train"],
                          creates=data / "ImageSets/480p/train.txt"))
        data_args = ["--data", str(data)]
    if args.val_root is None:
        args.val_root = out / "data"
        sequences, frames, size = (2, 8, "96x128") if args.quick else (40, 24, "270x480")
        plan.append(Stage("synth-val", ["synth", "--out", str(args.val_root), "--sequences", str(sequences), "--frames",
                                        str(frames), "--size", size, "--seed", "1", "--split", "val"],
                          creates=args.val_root / "ImageSets/480p/val.txt"))
    common = [*data_args, "--input-size", b["size"], "--warmup", str(b["warmup"]), "--seed", str(args.seed), *threads]
    student = [*common, "--clip-len", "3", "--batch", str(b["batch"]), "--steps", str(b["student_steps"])]
    spatial, temporal = runs / "teacher-spatial", runs / "teacher-temporal"
    cache = ["--teacher-cache", str(out / "teacher-cache")] if not args.no_cache else []
    plan += [
        Stage("teacher-spatial", ["teacher", "--kind", "spatial", "--out", str(spatial), *common, "--clip-len", "1",
                                  "--batch", str(b["spatial_batch"]), "--steps", str(b["spatial_steps"])],
              run_dir=spatial, row="spatial teacher"),
        Stage("teacher-temporal", ["teacher", "--kind", "temporal", "--out", str(temporal), *common, "--clip-len", "3",
                                   "--batch", str(b["batch"]), "--steps", str(b["temporal_steps"]), "--lr", "1e-3",
                                   "--init-from", str(spatial / "last.pt")],
              run_dir=temporal, row="temporal teacher"),
        Stage("student", ["train", "--out", str(runs / "student"), *student], run_dir=runs / "student",
              row="student alone"),
        Stage("skd", ["distill", "--out", str(runs / "skd"), *student, "--spatial-teacher", str(spatial / "last.pt"),
                      *cache], run_dir=runs / "skd", row="+ SKD"),
        Stage("tkd", ["distill", "--out", str(runs / "tkd"), *student, "--temporal-teacher", str(temporal / "last.pt"),
                      *cache], run_dir=runs / "tkd", row="+ TKD"),
        Stage("skd-tkd", ["distill", "--out", str(runs / "skd-tkd"), *student, "--spatial-teacher",
                          str(spatial / "last.pt"), "--temporal-teacher", str(temporal / "last.pt"), *cache],
              run_dir=runs / "skd-tkd", row="+ SKD + TKD"),
    ]
    store = out / "store"
    evaluation = ["--root", str(args.val_root), "--split", args.val_split, "--threads", str(SPEED_THREADS), "--no-progress"]
    for name in ("student", "skd", "tkd", "skd-tkd"):
        plan.append(Stage(f"export-{name}", ["export", "--checkpoint", str(runs / name / "last.pt"), "--name",
                                             f"ablation-{name}", "--store", str(store), "--speed-frames", "5",
                                             "--no-progress"], creates=store / f"ablation-{name}" / "manifest.json"))
    for stage in list(plan):
        if stage.run_dir is None:
            continue
        if stage.name.startswith("teacher"):
            target = ["--teacher", str(stage.run_dir / "last.pt")]
        else:
            target = ["--model", f"ablation-{stage.run_dir.name}", "--store", str(store)]
        scores = out / "eval" / f"{stage.name}.json"
        plan.append(Stage(f"eval-{stage.name}", ["eval", *evaluation, *target, "--json", str(scores)],
                          creates=scores, row=stage.row))
    plan.append(Stage("eval-framediff", ["eval", *evaluation, "--baseline", "framediff", "--json",
                                         str(out / "eval" / "framediff.json")], creates=out / "eval" / "framediff.json",
                      row="frame difference"))
    return plan


def finished(run_dir: Path) -> bool:
    """A training run is done when its log's last stop came from reaching the step count."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return False
    stops = [json.loads(line) for line in log.read_text().splitlines() if '"event": "stop"' in line]
    return bool(stops) and stops[-1]["reason"] == "steps"


def run_stage(stage: Stage, logs: Path) -> None:
    if stage.run_dir is not None and finished(stage.run_dir):
        print(f"[skip] {stage.name}: finished", flush=True)
        return
    if stage.creates is not None and stage.creates.exists():
        print(f"[skip] {stage.name}: {stage.creates} exists", flush=True)
        return
    args = list(stage.args)
    if stage.run_dir is not None and (stage.run_dir / "last.pt").exists():
        args.append("--resume")  # interrupted earlier: the same flags continue the same run
    logs.mkdir(parents=True, exist_ok=True)
    print(f"[run ] {stage.name}: {shlex.join(['vsod-train', *args])}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with (logs / f"{stage.name}.log").open("a") as handle:
        done = subprocess.run([sys.executable, "-m", "distill.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                              env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage.name} failed (exit {done.returncode}); see {logs / f'{stage.name}.log'}")
    print(f"[done] {stage.name} in {time.perf_counter() - start:.0f} s", flush=True)


def training_budget(run_dir: Path) -> dict[str, Any]:
    """Steps, batch, clip length, input size and wall time, read back from the run's log."""
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    config = next(r["config"] for r in records if r.get("event") == "start")
    stop = [r for r in records if r.get("event") == "stop"][-1]
    return {"steps": stop["step"], "batch": config["batch"], "clip_len": config["clip_len"],
            "input_size": config["input_size"], "training_seconds": stop["training_seconds"]}


def measure_speed(out: Path, quick: bool) -> dict[str, Any]:
    """CPU ms per frame at 352x352 (2 threads) and GFLOPs per frame of the three architectures."""
    import torch

    from distill.teachers import load_teacher, model_flops, stream_ms_per_frame
    from service.model import ModelStore

    frames, repeats = (3, 1) if quick else (10, 5)
    models: dict[str, ClipNetwork] = {"student": ModelStore(out / "store").load("ablation-student")[0]}
    for role in ("spatial", "temporal"):
        models[f"{role} teacher"] = load_teacher(out / "runs" / f"teacher-{role}" / "last.pt").model
    speed: dict[str, Any] = {}
    for name, model in models.items():
        speed[name] = stream_ms_per_frame(model, SPEED_SIZE, SPEED_THREADS, frames=frames, repeats=repeats)
        speed[name]["gflops"] = round(model_flops(model, SPEED_SIZE) / 1e9, 3)
        del model
    speed["torch_threads_after"] = torch.get_num_threads()
    return speed


def table(plan: list[Stage], out: Path, speed: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    budget_of = {s.row: training_budget(s.run_dir) for s in plan if s.run_dir is not None}
    rows = []
    for stage in [s for s in plan if s.name.startswith("eval-")]:
        assert stage.creates is not None and stage.row is not None  # every evaluation writes a file for a row
        result = next(iter(json.loads(stage.creates.read_text())["results"].values()))
        arch = "student" if stage.row in ("student alone", "+ SKD", "+ TKD", "+ SKD + TKD") else stage.row
        rows.append({"model": stage.row, **{k: result[k] for k in ("mae", "s_measure", "max_f", "mean_e", "flicker",
                                                                     "flicker_gt", "flicker_pairs")},
                     "speed": speed.get(arch), "budget": budget_of.get(stage.row)})
    lines = [("| model | MAE ↓ | S ↑ | max F ↑ | mean E ↑ | flicker ↓ (GT floor) | CPU ms/frame @352, 2 thr | GFLOPs | "
              "training budget |"), "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        flicker = "-" if row["flicker"] is None else f"{row['flicker']:.4f} ({row['flicker_gt']:.4f})"
        speed_cell = f"{row['speed']['ms_per_frame']:.1f}" if row["speed"] else "-"
        gflops = f"{row['speed']['gflops']:.2f}" if row["speed"] else "-"
        budget = row["budget"]
        budget_cell = (f"{budget['steps']} steps x {budget['batch']} clips x {budget['clip_len']} frames @ "
                       f"{budget['input_size'][0]}, {budget['training_seconds'] / 60:.0f} min") if budget else "-"
        lines.append(f"| {row['model']} | {row['mae']:.4f} | {row['s_measure']:.4f} | {row['max_f']:.4f} | "
                     f"{row['mean_e']:.4f} | {flicker} | {speed_cell} | {gflops} | {budget_cell} |")
    ratio = speed["temporal teacher"]["ms_per_frame"] / speed["student"]["ms_per_frame"]
    lines += ["", (f"Student vs temporal teacher, CPU per frame at 352x352 ({SPEED_THREADS} threads, this run): "
                   f"{ratio:.1f}x faster.")]
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="ablation folder: data, runs, store, evals, table")
    parser.add_argument("--train-data", action="append", default=[], type=Path,
                        help="training data root(s) (DAVIS layout, split train); default: generate synthetic data")
    parser.add_argument("--val-root", type=Path, default=None, help="validation root; default: generate synthetic data")
    parser.add_argument("--val-split", default="val", help="validation split (default val)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per training run (default 2, quick 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step budget (e.g. 0.5 for half)")
    for kind in ("spatial", "temporal", "student"):
        parser.add_argument(f"--{kind}-steps", type=int, default=None,
                            help=f"steps of the {kind} run{'s' if kind == 'student' else ''} (overrides --scale for it)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 64 px, 3 steps per run")
    parser.add_argument("--no-cache", action="store_true", help="do not keep teacher outputs on disk between runs")
    parser.add_argument("--keep-cache", action="store_true", help="keep the teacher cache after the distillation runs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    args.threads = args.threads or (1 if args.quick else 2)
    args.out = args.out.resolve()
    plan = stages(args)
    if args.dry_run:
        print("\n".join(f"{s.name}: {s.command()}" for s in plan))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for stage in plan:
        run_stage(stage, args.out / "logs")
        if stage.name == "skd-tkd" and not args.keep_cache and (args.out / "teacher-cache").exists():
            size = sum(f.stat().st_size for f in (args.out / "teacher-cache").rglob("*.pt"))
            shutil.rmtree(args.out / "teacher-cache")
            print(f"[info] removed the teacher cache ({size / 2**30:.2f} GiB)", flush=True)
    print("[run ] speed at 352x352", flush=True)
    speed = measure_speed(args.out, args.quick)
    markdown, rows = table(plan, args.out, speed)
    from distill.measure import machine_info

    machine = machine_info()
    header = [f"# Distillation ablation{' (quick smoke run: numbers mean nothing)' if args.quick else ''}", "",
              (f"Validation: `{args.val_root}` split `{args.val_split}` (DAVSOD protocol; flicker: mean mask change over "
               "consecutive frames whose ground truth changes by <= 0.5 % of the pixels, GT's own change in brackets)."),
              (f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']}; load average at the end "
               f"{machine['load_average']}."), f"Command: `{shlex.join([sys.executable, *sys.argv])}`", ""]
    text = "\n".join([*header, markdown, "", "## Commands", "", "```bash", *(s.command() for s in plan), "```", ""])
    (args.out / "ablation.md").write_text(text)
    print(text)
    print(json.dumps({"rows": rows, "speed": speed, "commands": [s.command() for s in plan], "machine": machine,
                      "quick": args.quick, "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
