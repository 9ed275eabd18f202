"""Whether a candidate run beats its control by a rule fixed before either finished.

    python docs/training/verdict.py SCORES_DIR CANDIDATE CONTROL [CONTROL...]

SCORES_DIR holds lib.sh `score` files, MODEL-SET.json (`vsod-train eval --json`). The rule is the one
docs/training/scenes.sh and views.sh state; it is written here once, as code, so that a verdict is computed, not
read off a table after the fact:
- on the held-out sets (objects and scenery no run has seen) the candidate's mean S is at least
  HELD_GAIN above the control's and it loses at most MAX_LOSS of S on any one of them;
- on the sets that guard what the model already does (val-wide, synthetic, motion-only) it loses at
  most MAX_LOSS of S;
- its flicker on consecutive real frames rises by at most MAX_FLICKER_RISE.
Several CONTROLs are runs of the same recipe with other seeds (docs/training/noise.sh): the candidate is
then measured against their mean, and each bound widens to what the controls themselves spread on it
(largest minus smallest), so that a run no better than the control does not pass by luck, and one no
worse does not fail by it. With one control the rule is the bounds above.
Prints one line a check and the verdict; exits 0 when the candidate passes, 1 when it does not, 2 when
a score is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from scores import FLICKER_SET, result  # this folder's reader of score files

HELD_OUT = ("held-photos", "held-composites", "held-scenes")
GUARDED = ("real-wide", "synth", "motion")
HELD_GAIN, MAX_LOSS, MAX_FLICKER_RISE = 0.01, 0.01, 0.001


def verdict(scores: Path, candidate: str, controls: list[str]) -> tuple[bool, list[str]]:
    lines, passed = [], True

    def s_measure(model: str, dataset: str) -> float:
        return float(result(scores, model, dataset)["s_measure"])

    def held_mean(model: str) -> float:
        return sum(s_measure(model, name) for name in HELD_OUT) / len(HELD_OUT)

    def flicker(model: str) -> float:
        return float(result(scores, model, FLICKER_SET)["flicker"])

    def against_controls(value: Callable[[str], float]) -> tuple[float, float]:
        """The candidate's value minus the controls' mean, and the controls' spread."""
        values = [value(control) for control in controls]
        return value(candidate) - sum(values) / len(values), max(values) - min(values)

    gain, spread = against_controls(held_mean)
    checks = [(f"held-out mean S {gain:+.4f} >= {max(HELD_GAIN, spread):+.4f}", gain >= max(HELD_GAIN, spread))]
    for name in (*HELD_OUT, *GUARDED):
        gain, spread = against_controls(partial(s_measure, dataset=name))
        checks.append((f"{name} S {gain:+.4f} >= {-max(MAX_LOSS, spread):+.4f}", gain >= -max(MAX_LOSS, spread)))
    rise, spread = against_controls(flicker)
    bound = max(MAX_FLICKER_RISE, spread)
    checks.append((f"{FLICKER_SET} flicker {rise:+.4f} <= {bound:+.4f}", rise <= bound))
    for text, ok in checks:
        lines.append(f"{'pass' if ok else 'FAIL'}  {text}")
        passed &= ok
    lines.append(f"{candidate} against {', '.join(controls)}: {'passes' if passed else 'does not pass'}")
    return passed, lines


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: verdict.py SCORES_DIR CANDIDATE CONTROL [CONTROL...]", file=sys.stderr)
        return 2
    try:
        passed, lines = verdict(Path(argv[0]), argv[1], argv[2:])
    except (OSError, KeyError, TypeError, ValueError) as error:
        print(f"verdict.py: a score is missing or unreadable: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
