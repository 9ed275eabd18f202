"""Readers for the benchmarks' on-disk layouts, each returning `VideoSequence`s.

- DAVIS-2016: `ImageSets/480p/<split>.txt` lines "/JPEGImages/480p/s/00000.jpg /Annotations/480p/s/00000.png"
  (the synthetic generator writes this layout too);
- DAVIS-2017: `ImageSets/2017/<split>.txt` (or `2016/`) with sequence names; palette annotations binarised;
- DAVSOD, SegTrack-V2, FBMS as repackaged for VSOD: `<seq>/Imgs` + `GT_object_level` (or `ground-truth`),
  masks matched to frames by file stem, sparse ground truth allowed;
- DUTS-TR: `DUTS-TR-Image/*.jpg` + `DUTS-TR-Mask/*.png`, each image a one-frame sequence;
- labelled: the DAVIS-2016 layout that `vsod-train label` writes, its annotations a teacher's soft maps,
  which training reads as soft targets in [0, 1] (`VideoSequence.soft`) instead of binarising them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .sequences import VideoSequence, list_images, natural_key

# Ground-truth folder names seen in the VSOD repackagings (DAVSOD, SegTrack-V2, FBMS, ViSal, VOS).
GT_FOLDERS = ("GT_object_level", "ground-truth", "GT", "gt", "GroundTruth", "Masks", "masks")
FRAME_FOLDERS = ("Imgs", "Frames", "JPEGImages", "images")


class DatasetError(ValueError):
    """A dataset that cannot be loaded: unknown name, bad layout, or nothing in it."""


class DatasetNotFoundError(FileNotFoundError, DatasetError):
    """The dataset root does not exist (both a FileNotFoundError and a ValueError, for either kind of caller)."""


def _require_root(root: Path | str, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetNotFoundError(f"{what} root {path} does not exist or is not a folder")
    return path


def _trailing_number(stem: str) -> int | None:
    match = re.search(r"(\d+)(?!.*\d)", stem)
    return int(match.group(1)) if match else None


def match_masks(frames: list[Path], masks: list[Path]) -> dict[int, Path]:
    """Frame index -> mask path, by equal file stem; by the stems' last number when no stem matches
    (some repackagings name GT `frame_1.png` beside `frame_00001.jpg`)."""
    by_stem = {mask.stem: mask for mask in masks}
    matched = {i: by_stem[frame.stem] for i, frame in enumerate(frames) if frame.stem in by_stem}
    if matched or not masks:
        return matched
    by_number: dict[int, Path] = {}
    for mask in masks:
        number = _trailing_number(mask.stem)
        if number is not None:
            by_number.setdefault(number, mask)
    for i, frame in enumerate(frames):
        number = _trailing_number(frame.stem)
        if number is not None and number in by_number:
            matched[i] = by_number[number]
    return matched


def _folder_sequence(name: str, frame_dir: Path, mask_dir: Path | None) -> VideoSequence | None:
    frames = list_images(frame_dir)
    if not frames:
        return None
    masks = match_masks(frames, list_images(mask_dir)) if mask_dir is not None else {}
    return VideoSequence(name, frames, masks)


# ---------------------------------------------------------------------------------------------- DAVIS


def _davis2016_list(root: Path, list_file: Path) -> list[VideoSequence]:
    frames: dict[str, list[Path]] = {}
    annotations: dict[str, dict[Path, Path]] = {}
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise DatasetError(f"{list_file}:{number}: expected 'image [annotation]', got {line!r}")
        image = root / parts[0].lstrip("/")
        name = image.parent.name
        frames.setdefault(name, []).append(image)
        if len(parts) == 2:
            annotation = root / parts[1].lstrip("/")
            if annotation.is_file():
                annotations.setdefault(name, {})[image] = annotation
    sequences = []
    for name, images in frames.items():
        images = sorted(dict.fromkeys(images), key=natural_key)
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise DatasetError(f"{list_file} lists {missing[0]}, which does not exist")
        by_image = annotations.get(name, {})
        masks = {i: by_image[image] for i, image in enumerate(images) if image in by_image}
        sequences.append(VideoSequence(name, images, masks))
    return sequences


def _davis_folders(root: Path, names: list[str], resolution: str) -> list[VideoSequence]:
    sequences = []
    for name in names:
        frame_dir = root / "JPEGImages" / resolution / name
        if not frame_dir.is_dir():
            raise DatasetError(f"DAVIS sequence {name!r} has no folder {frame_dir}")
        sequence = _folder_sequence(name, frame_dir, root / "Annotations" / resolution / name)
        if sequence is not None:
            sequences.append(sequence)
    return sequences


def load_davis(root: Path | str, split: str | None = "val", resolution: str = "480p") -> list[VideoSequence]:
    """DAVIS-2016 (`ImageSets/<res>/<split>.txt`) or DAVIS-2017 (`ImageSets/2017|2016/<split>.txt`).

    With no image-set lists at all, or `split=None`, every sequence folder under `JPEGImages/<res>`.
    """
    root = _require_root(root, "DAVIS")
    list_2016 = root / "ImageSets" / resolution / f"{split}.txt"
    if split is not None and list_2016.is_file():
        return _davis2016_list(root, list_2016)
    # DAVIS-2017 packages list sequence names, for 2017 and for the 2016 subset.
    for year in ("2017", "2016"):
        name_list = root / "ImageSets" / year / f"{split}.txt"
        if split is not None and name_list.is_file():
            names = [line.strip() for line in name_list.read_text().splitlines() if line.strip()]
            return _davis_folders(root, list(dict.fromkeys(names)), resolution)
    lists = ("2017", "2016", resolution)
    available = sorted({p.stem for folder in lists for p in (root / "ImageSets" / folder).glob("*.txt")})
    if split is not None and available:
        # Falling back to every folder here would silently mix the training split into evaluation.
        raise DatasetError(f"DAVIS root {root} has no split {split!r} (available: {', '.join(available)})")
    frame_root = root / "JPEGImages" / resolution
    if not frame_root.is_dir():
        raise DatasetError(f"DAVIS root {root} has neither ImageSets lists nor a JPEGImages/{resolution} folder")
    names = sorted((p.name for p in frame_root.iterdir() if p.is_dir()), key=natural_key)
    return _davis_folders(root, names, resolution)


# ------------------------------------------------------------------------------- VSOD repackagings


def _find_child(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def _vsod_sequences(base: Path, max_depth: int = 3) -> list[VideoSequence]:
    """Every `<seq>/Imgs` (+ GT folder) under `base`, searched a few levels deep so that both
    `root/<seq>` and `root/<split>/<seq>` work; names are paths relative to `base`."""
    frame_dir = _find_child(base, FRAME_FOLDERS)
    if frame_dir is not None:  # the root is itself one sequence folder
        sequence = _folder_sequence(base.name, frame_dir, _find_child(base, GT_FOLDERS))
        return [sequence] if sequence is not None else []
    sequences = []
    pending = [(base, 0)]
    while pending:
        folder, depth = pending.pop()
        frame_dir = _find_child(folder, FRAME_FOLDERS)
        if frame_dir is not None:
            name = folder.relative_to(base).as_posix()
            sequence = _folder_sequence(name, frame_dir, _find_child(folder, GT_FOLDERS))
            if sequence is not None:
                sequences.append(sequence)
            continue
        if depth < max_depth:
            pending.extend((child, depth + 1) for child in folder.iterdir() if child.is_dir())
    return sorted(sequences, key=lambda s: natural_key(s.name))


def _load_vsod(root: Path | str, split: str | None, what: str) -> list[VideoSequence]:
    base = _require_root(root, what)
    if split is not None:
        base = base / split
        if not base.is_dir():
            splits = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
            raise DatasetError(f"{what} root {root} has no split folder {split!r} (folders: {', '.join(splits)})")
    return _vsod_sequences(base)


def load_davsod(root: Path | str, split: str | None = None) -> list[VideoSequence]:
    """DAVSOD: `<root>[/<split>]/<seq>/Imgs/*.jpg|png` + `GT_object_level/*.png`."""
    return _load_vsod(root, split, "DAVSOD")


def load_segtrack_v2(root: Path | str) -> list[VideoSequence]:
    """SegTrack-V2 repackaged: `<seq>/Imgs` + `GT_object_level` or `ground-truth` (sparse allowed)."""
    return _load_vsod(root, None, "SegTrack-V2")


def load_fbms(root: Path | str, split: str | None = None) -> list[VideoSequence]:
    """FBMS repackaged for VSOD (`<seq>/Imgs` + `GT_object_level`), ground truth every few frames."""
    return _load_vsod(root, split, "FBMS")


# ---------------------------------------------------------------------------------------------- DUTS


def load_duts(root: Path | str) -> list[VideoSequence]:
    """DUTS-TR (or -TE): every image with a mask becomes a one-frame sequence.

    `root` may be the `DUTS-TR` folder itself or its parent.
    """
    base = _require_root(root, "DUTS")
    for candidate in (base, base / "DUTS-TR", base / "DUTS-TE"):
        image_dirs = sorted(candidate.glob("DUTS-T[RE]-Image")) if candidate.is_dir() else []
        if image_dirs:
            break
    else:
        raise DatasetError(f"DUTS root {base} has no DUTS-TR-Image folder")
    sequences = []
    for image_dir in image_dirs:
        mask_dir = image_dir.with_name(image_dir.name.replace("-Image", "-Mask"))
        masks = {p.stem: p for p in list_images(mask_dir)}
        for image in list_images(image_dir):
            if image.stem in masks:
                sequences.append(VideoSequence(image.stem, [image], {0: masks[image.stem]}))
    return sequences


# ------------------------------------------------------------------------------------------ labelled


def load_labelled(root: Path | str, split: str | None = "val") -> list[VideoSequence]:
    """A teacher-labelled root (`vsod-train label`): DAVIS-2016 layout, masks kept soft for training.

    Evaluation code that reads masks with `read_mask` still binarises them (at half range), as it
    does any ground truth; only training (`ClipDataset`) honours `soft`.
    """
    sequences = load_davis(_require_root(root, "labelled"), split)
    for sequence in sequences:
        sequence.soft = True
    return sequences


# ------------------------------------------------------------------------------------------ registry

DATASETS: dict[str, Callable[..., list[VideoSequence]]] = {
    "davis": load_davis,
    "davsod": load_davsod,
    "segtrack": load_segtrack_v2,
    "fbms": load_fbms,
    "duts": load_duts,
    "labelled": load_labelled,
}
ALIASES = {
    "davis2016": "davis", "davis-2016": "davis", "davis2017": "davis", "davis-2017": "davis", "synthetic": "davis",
    "segtrack-v2": "segtrack", "segtrackv2": "segtrack", "segv2": "segtrack", "duts-tr": "duts",
    "labeled": "labelled", "teacher": "labelled",
}
SPLITLESS = {"segtrack", "duts"}


def load_dataset(name: str, root: Path | str, split: str | None = None) -> list[VideoSequence]:
    """Load `name` from `root`; `split=None` takes the loader's default (DAVIS: "val").

    Raises a DatasetError (a ValueError) for an unknown name or an empty result, and
    DatasetNotFoundError (a FileNotFoundError and a ValueError) for a missing root.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r} (choose from: {', '.join(sorted(DATASETS))})")
    if key in SPLITLESS and split is not None:
        raise DatasetError(f"dataset {key!r} has no splits; drop the split {split!r}")
    loader = DATASETS[key]
    sequences = loader(root) if split is None else loader(root, split)
    if not sequences:
        where = f"{root} (split {split})" if split else str(root)
        raise DatasetError(f"no {key} sequences with frames found under {where}")
    return sequences


def load_sequences(dataset: str, root: str | Path, split: str | None, max_sequences: int | None = None) -> list[VideoSequence]:
    """What training and evaluation read: `load_dataset`, with `split` dropped for layouts that have
    none (SegTrack-V2, DUTS), optionally only the first `max_sequences`."""
    if ALIASES.get(dataset.lower(), dataset.lower()) in SPLITLESS:
        split = None
    sequences = load_dataset(dataset, Path(root), split=split)
    return sequences[:max_sequences] if max_sequences is not None else sequences
