"""Whether a candidate run beats its control by a rule fixed before either finished.

    python docs/training/verdict.py SCORES_DIR CANDIDATE CONTROL

SCORES_DIR holds lib.sh `score` files, MODEL-SET.json (`vsod-train eval --json`). The rule is the one
docs/training/scenes.sh and views.sh state; it is written here once, as code, so that a verdict is computed, not
read off a table after the fact:
- on the held-out sets (objects and scenery no run has seen) the candidate's mean S is at least
  HELD_GAIN above the control's and it loses at most MAX_LOSS of S on any one of them;
- on the sets that guard what the model already does (val-wide, synthetic, motion-only) it loses at
  most MAX_LOSS of S;
- its flicker on consecutive real frames rises by at most MAX_FLICKER_RISE.
Prints one line a check and the verdict; exits 0 when the candidate passes, 1 when it does not, 2 when
a score is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scores import FLICKER_SET, result  # this folder's reader of score files

HELD_OUT = ("held-photos", "held-composites", "held-scenes")
GUARDED = ("real-wide", "synth", "motion")
HELD_GAIN, MAX_LOSS, MAX_FLICKER_RISE = 0.01, 0.01, 0.001


def verdict(scores: Path, candidate: str, control: str) -> tuple[bool, list[str]]:
    lines, passed = [], True

    def s_measure(model: str, dataset: str) -> float:
        return float(result(scores, model, dataset)["s_measure"])

    gains = {name: s_measure(candidate, name) - s_measure(control, name) for name in (*HELD_OUT, *GUARDED)}
    mean_gain = sum(gains[name] for name in HELD_OUT) / len(HELD_OUT)
    checks = [(f"held-out mean S {mean_gain:+.4f} >= {HELD_GAIN:+.2f}", mean_gain >= HELD_GAIN)]
    checks += [(f"{name} S {gains[name]:+.4f} >= {-MAX_LOSS:+.2f}", gains[name] >= -MAX_LOSS) for name in (*HELD_OUT, *GUARDED)]
    rise = result(scores, candidate, FLICKER_SET)["flicker"] - result(scores, control, FLICKER_SET)["flicker"]
    checks.append((f"{FLICKER_SET} flicker {rise:+.4f} <= {MAX_FLICKER_RISE:+.3f}", rise <= MAX_FLICKER_RISE))
    for text, ok in checks:
        lines.append(f"{'pass' if ok else 'FAIL'}  {text}")
        passed &= ok
    lines.append(f"{candidate} against {control}: {'passes' if passed else 'does not pass'}")
    return passed, lines


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: verdict.py SCORES_DIR CANDIDATE CONTROL", file=sys.stderr)
        return 2
    try:
        passed, lines = verdict(Path(argv[0]), argv[1], argv[2])
    except (OSError, KeyError, TypeError, ValueError) as error:
        print(f"verdict.py: a score is missing or unreadable: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
