"""Score files read, and set side by side as a table.

    python docs/training/scores.py SCORES_DIR --models A B ... --sets SET ...

SCORES_DIR holds lib.sh `score` files, MODEL-SET.json (`vsod-train eval --json`), each with one result.
Prints a Markdown table of S, one row a model (flicker beside S on the consecutive real frames); with
two or more models a last row gives each set's spread, the largest S minus the smallest: between two
seeds of one recipe, that is the run-to-run noise a rule has to sit above (docs/training/noise.sh).
Exits 2 with one line when a score is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FLICKER_SET = "real-consecutive"


def result(scores: Path, model: str, dataset: str) -> dict[str, float]:
    """The model's one result in MODEL-SET.json."""
    payload = json.loads((scores / f"{model}-{dataset}.json").read_text())
    (only,) = payload["results"].values()
    return dict(only)


def table(scores: Path, models: list[str], sets: list[str]) -> list[str]:
    """The Markdown rows: S per model and set, and the spread per set when there are several models."""
    results = {(model, name): result(scores, model, name) for model in models for name in sets}
    s_measure = {key: float(found["s_measure"]) for key, found in results.items()}
    lines = ["| model | " + " | ".join(sets) + " |", "| --- " * (len(sets) + 1) + "|"]
    for model in models:
        cells = []
        for name in sets:
            cell = f"{s_measure[model, name]:.4f}"
            if name == FLICKER_SET:
                cell += f" ({float(results[model, name]['flicker']):.4f})"
            cells.append(cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if len(models) > 1:
        spreads = [max(s_measure[m, name] for m in models) - min(s_measure[m, name] for m in models) for name in sets]
        lines.append("| spread | " + " | ".join(f"{spread:.4f}" for spread in spreads) + " |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", type=Path, help="the folder of MODEL-SET.json score files")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--sets", nargs="+", required=True)
    args = parser.parse_args(argv)
    try:
        lines = table(args.scores, args.models, args.sets)
    except (OSError, KeyError, TypeError, ValueError) as error:
        print(f"scores.py: a score is missing or unreadable: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
