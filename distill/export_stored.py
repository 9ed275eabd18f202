"""Export a stored model again at another input size: the same weights, everything else measured again.

    vsod-train export --from-model vsod-student --input-size 320 --name vsod-student --version 3 \
        --store /tmp/release --eval-root data/synth --eval-dataset davis --eval-split val

A student trained at one size may serve better at another: a larger input shows small objects larger.
Nothing of the source's measurements is carried over: the step graph is exported at the new size and
checked against the eager model, and speed and the evaluation are measured again. The lineage is the
source's, plus the source itself; the report gives this export's measurements and then the source's
report, which has the training.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

from distill.measure import measure, measurement_sections, report_heading, save_measured
from distill.runs import command_line, git_revision, parse_size
from service.model import Manifest, ModelStore
from service.model.store import REPORT


def demote_headings(markdown: str) -> str:
    """Every Markdown heading one level down, so a report nests under another's heading; lines inside
    fenced code blocks (a shell comment starts with "# " too) are left as they are."""
    lines, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            line = "#" + line
        lines.append(line)
    return "\n".join(lines)


def run_export_stored(args: argparse.Namespace, store: ModelStore) -> int:
    if not args.input_size:
        raise ValueError("--from-model needs --input-size: the size to serve the stored weights at")
    source_store = ModelStore(args.from_store) if args.from_store else store
    model, source = source_store.load(args.from_model)
    source_report_path = source_store.root / args.from_model / REPORT
    source_report = source_report_path.read_text() if source_report_path.is_file() else None
    origin = {"name": source.name, "version": source.version, "sha256": source.sha256,
              "input_size": list(source.input_size), "export": source.lineage.get("export")}
    manifest = Manifest(
        name=args.name,
        architecture=source.architecture,
        config=model.config.to_dict(),
        input_size=parse_size(args.input_size),
        version=args.version,
        sha256="",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        lineage={**source.lineage, "source_model": origin, "export": {"command": command_line(), "git": git_revision()}},
    )
    evaluation, speed, machine = measure(model, manifest, args)

    def report() -> str:
        height, width = manifest.input_size
        lines = report_heading(manifest, args.notes)
        lines += [
            "## Source",
            "",
            (f"The weights of `{source.name}` version {source.version} (sha256 `{source.sha256}`), trained and "
             f"first served at {source.input_size[0]}x{source.input_size[1]}, served here at {height}x{width}: the "
             "step graph is exported again at this size, and every figure below is measured again. The source's "
             "report, with its training, follows them."),
            "",
            *measurement_sections(manifest, evaluation, speed, machine),
        ]
        if source_report:
            body = source_report.split("\n", 1)[1] if source_report.startswith("# ") else source_report  # its title
            lines += [f"## The source's report (`{source.name}` version {source.version})", "", demote_headings(body)]
        return "\n".join(lines)

    save_measured(store, model, manifest, args, report)
    return 0
