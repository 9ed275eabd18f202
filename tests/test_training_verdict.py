"""docs/training/verdict.py: the rule that chooses between training runs, computed from score files;
and docs/training/scores.py, which reads those files and sets them side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = ("held-photos", "held-composites", "held-scenes", "real-wide", "synth", "motion", "real-consecutive")


def write_scores(folder: Path, model: str, s_measure: dict[str, float], flicker: float = 0.005) -> None:
    for name in SETS:
        payload = {"results": {model: {"s_measure": s_measure.get(name, 0.8), "flicker": flicker}}}
        (folder / f"{model}-{name}.json").write_text(json.dumps(payload))


def run_verdict(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "docs/training/verdict.py"), str(folder), "new", "old"],
                          capture_output=True, text=True, timeout=60)


def test_a_candidate_passes_only_with_the_held_out_gain_and_no_loss(tmp_path: Path) -> None:
    write_scores(tmp_path, "old", {})
    write_scores(tmp_path, "new", {"held-photos": 0.82, "held-composites": 0.815, "held-scenes": 0.81, "synth": 0.795})
    done = run_verdict(tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("new against old: passes"), done.stdout

    write_scores(tmp_path, "new", {"held-photos": 0.86, "held-composites": 0.785})  # one held-out set lost 0.015
    done = run_verdict(tmp_path)
    assert done.returncode == 1 and "FAIL  held-composites S -0.0150" in done.stdout

    write_scores(tmp_path, "new", {"held-photos": 0.809, "held-composites": 0.809, "held-scenes": 0.809})  # +0.009
    assert run_verdict(tmp_path).returncode == 1

    write_scores(tmp_path, "new", {"held-photos": 0.83, "held-composites": 0.83, "held-scenes": 0.83}, flicker=0.0065)
    done = run_verdict(tmp_path)
    assert done.returncode == 1 and "FAIL  real-consecutive flicker +0.0015" in done.stdout


def test_several_controls_set_the_bar_at_their_mean_and_widen_each_bound_to_their_spread(tmp_path: Path) -> None:
    write_scores(tmp_path, "old", {"real-wide": 0.77}, flicker=0.005)
    write_scores(tmp_path, "old2", {"held-photos": 0.83, "real-wide": 0.80}, flicker=0.008)
    write_scores(tmp_path, "new", {"held-photos": 0.8, "held-composites": 0.83, "held-scenes": 0.83, "real-wide": 0.765},
                 flicker=0.008)
    done = subprocess.run([sys.executable, str(REPO / "docs/training/verdict.py"), str(tmp_path), "new", "old", "old2"],
                          capture_output=True, text=True, timeout=60)
    # held-out mean 0.82: +0.015 over the controls' mean (0.805), above max(0.01, their spread 0.01); held
    # photos -0.015 and val-wide -0.02 are within the seeds' spread (0.03); flicker +0.0015 within 0.003
    assert done.returncode == 0, done.stdout
    assert "pass  held-out mean S +0.0150 >= +0.0100" in done.stdout
    assert "pass  held-photos S -0.0150 >= -0.0300" in done.stdout and "pass  real-wide S -0.0200 >= -0.0300" in done.stdout
    assert "pass  real-consecutive flicker +0.0015 <= +0.0030" in done.stdout
    assert done.stdout.strip().endswith("new against old, old2: passes")

    write_scores(tmp_path, "old2", {"held-photos": 0.83, "real-wide": 0.78}, flicker=0.008)  # seeds closer: spread 0.01
    write_scores(tmp_path, "new", {"held-photos": 0.8, "held-composites": 0.82, "held-scenes": 0.82, "real-wide": 0.76},
                 flicker=0.008)
    done = subprocess.run([sys.executable, str(REPO / "docs/training/verdict.py"), str(tmp_path), "new", "old", "old2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "FAIL  real-wide S -0.0150 >= -0.0100" in done.stdout


def test_a_missing_score_is_one_line_and_exit_2(tmp_path: Path) -> None:
    write_scores(tmp_path, "old", {})
    done = run_verdict(tmp_path)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert "a score is missing" in done.stderr


def test_the_table_gives_each_models_s_and_each_sets_spread(tmp_path: Path) -> None:
    write_scores(tmp_path, "seed0", {"held-photos": 0.61, "held-scenes": 0.62}, flicker=0.0076)
    write_scores(tmp_path, "seed1", {"held-photos": 0.64, "held-scenes": 0.615}, flicker=0.0073)
    done = subprocess.run([sys.executable, str(REPO / "docs/training/scores.py"), str(tmp_path), "--models", "seed0",
                           "seed1", "--sets", "held-photos", "held-scenes", "real-consecutive"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "| model | held-photos | held-scenes | real-consecutive |",
        "| --- | --- | --- | --- |",
        "| seed0 | 0.6100 | 0.6200 | 0.8000 (0.0076) |",
        "| seed1 | 0.6400 | 0.6150 | 0.8000 (0.0073) |",
        "| spread | 0.0300 | 0.0050 | 0.0000 |",
    ]
    missing = subprocess.run([sys.executable, str(REPO / "docs/training/scores.py"), str(tmp_path), "--models", "seed0",
                              "--sets", "held-views"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stdout == "" and missing.stderr.count("\n") == 1
