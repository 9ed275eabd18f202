"""Where a training root came from, as a model's lineage records it.

    root_provenance(Path("/data/real/train"))   # {"teacher": {...isnet, sha256, licences}, "sources": [...]}

Roots written by `vsod-train label` carry `labels.json` (the teacher, its hash and licences, each
sequence's source) and roots of real-object composites carry `composites.json` (the labelled root
the objects were cut from, the backgrounds, how the clips were filmed). Reading them here, once, lets
training put them in the lineage and export name the real teacher and every source in the model's
report. Synthetic roots have neither: their lineage is the command that generated them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = "labels.json"  # distill.teachers.labelling writes it
COMPOSITES = "composites.json"  # distill.data.composites writes it


def root_provenance(root: Path | str) -> dict[str, Any]:
    """The teacher and sources behind `root`, or {} for a root without a sidecar (or one gone)."""
    root = Path(root)
    if (labels := _read(root / LABELS)) is not None:
        sequences = labels.get("sequences", {})
        return {"teacher": labels.get("teacher"), "sources": sorted({s["source"] for s in sequences.values()})}
    if (composites := _read(root / COMPOSITES)) is not None:
        cutouts = sorted({part["cutouts"] for part in composites.values()})
        backgrounds = sorted({b for part in composites.values() for b in part.get("backgrounds", [])})
        teachers = [t for c in cutouts if (t := root_provenance(c).get("teacher"))]
        # Each split's SceneStyle (object sizes, defocus); splits written before it was recorded have none.
        styles = [json.loads(text) for text in sorted({json.dumps(part["style"], sort_keys=True)
                                                       for part in composites.values() if "style" in part})]
        # Roots of scene photos (the clips set in whole labelled photos), where a split used them.
        scenes = sorted({part["scenes"] for part in composites.values() if "scenes" in part})
        return {"cutouts": cutouts, "backgrounds": backgrounds, **({"styles": styles} if styles else {}),
                **({"scenes": scenes} if scenes else {}), **({"teacher": teachers[0]} if teachers else {})}
    return {}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
