#!/usr/bin/env bash
# A validation set of other scenes: real-data.sh's photos and mix-data.sh's wallpapers split into a
# part to train on and a part held out, so that runs can be chosen on objects and scenery they have
# never seen (closing note 12: the validation frames are later parts of the two training videos, and
# they rank runs opposite to box.mp4 and cup.mp4, which may only be reported).
#
#   VSOD_TEACHER_CACHE=/work/cache/teachers bash docs/training/holdout-data.sh    # DATA=/work/data
#
#   $DATA/holdout/photos          real-data.sh's 36 photos labelled by the teacher: split train (27),
#                                 split val (9: every 4th in real_photos' order, from the 2nd: lib.sh photo_part)
#   $DATA/holdout/backgrounds-train, -val   links to mix-data.sh's wallpapers, split by theme (a
#                                 theme's light and dark or sized variants stay together): val holds
#                                 every 4th theme in name order, from the 2nd (4 of 15)
#   $DATA/holdout/composites      train objects over train wallpapers, as mix-data.sh's composites
#   $DATA/holdout/composites-varied   the same, varied as mix-data.sh's composites-varied
#   $DATA/holdout/composites-held split val: held-out objects over held-out wallpapers, varied style
#                                 (40 clips, seed 1000): the held-out scenes in motion
#   $DATA/holdout/composites-scenes   train objects, half the clips set in whole train photos (their own
#                                 objects salient too: `vsod-train synth --scenes`), varied style (150, seed 3)
#   $DATA/holdout/composites-held-scenes  split val: held-out objects moving over the held-out photos,
#                                 every clip set in one (40 clips, seed 1001): held-out real clutter
#
# The rule that picks the held-out part is mechanical and was written before any run used it. Models
# trained on the train parts (docs/training/holdout.sh) are chosen on the held-out photos, composites
# and scenes and val-wide (lib.sh's HELD_SETS); models that saw everything (the shipped versions)
# score higher on the held-out parts than they would on new objects. Resumable like mix-data.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source docs/training/lib.sh
out=$HELD

vsod-train fetch-teacher isnet
mapfile -t train < <(photo_part train)
mapfile -t held < <(photo_part val)
nice -n 10 vsod-train label --teacher isnet "${train[@]}" --split train --out "$out/photos"
nice -n 10 vsod-train label --teacher isnet "${held[@]}" --split val --out "$out/photos"

# Wallpapers by theme: /usr/share/backgrounds/gnome/NAME-l|d.webp, /usr/share/desktop-base/NAME-theme/...
if [[ ! -f $out/backgrounds-val/.done ]]; then
  rm -rf "$out/backgrounds-train" "$out/backgrounds-val"
  mkdir -p "$out/backgrounds-train" "$out/backgrounds-val"
  mapfile -t folders < <(wallpaper_folders)
  python3 - "$out" "${folders[@]}" <<'PY'
import re, sys
from pathlib import Path
from distill.data.composites import load_backgrounds

out, folders = Path(sys.argv[1]), [Path(f) for f in sys.argv[2:]]
def theme(path: str) -> str:
    found = re.search(r"/([^/]+)-theme/", path)
    return found.group(1) if found else re.sub(r"-[ld]$", "", Path(path).stem)
paths = sorted(load_backgrounds(folders))  # the files the generator accepts, by its own rule
themes = sorted({theme(p) for p in paths})
held = set(themes[1::4])
for path in paths:
    split = "val" if theme(path) in held else "train"
    link = out / f"backgrounds-{split}" / path.strip("/").replace("/", "_")
    link.symlink_to(path)
print(f"wallpaper themes held out: {', '.join(sorted(held))}; trained on: {', '.join(t for t in themes if t not in held)}")
PY
  touch "$out/backgrounds-val/.done"
fi

synth_once "$out/composites" .done-train-s1 --frames 24 --sequences 150 --seed 1 --split train \
  --cutouts "$out/photos" --cutout-split train --backgrounds "$out/backgrounds-train"
synth_once "$out/composites-varied" .done-train-s2 --frames 24 --sequences 150 --seed 2 --split train \
  --cutouts "$out/photos" --cutout-split train --backgrounds "$out/backgrounds-train" --object-size 0.06 0.45 --defocus 0.4
synth_once "$out/composites-held" .done-val-s1000 --frames 24 --sequences 40 --seed 1000 --split val \
  --cutouts "$out/photos" --cutout-split val --backgrounds "$out/backgrounds-val" --object-size 0.06 0.45 --defocus 0.4
synth_once "$out/composites-scenes" .done-train-s3 --frames 24 --sequences 150 --seed 3 --split train \
  --cutouts "$out/photos" --cutout-split train --backgrounds "$out/backgrounds-train" --object-size 0.06 0.45 --defocus 0.4 \
  --scenes "$out/photos" --scene-split train --scene-share 0.5
synth_once "$out/composites-held-scenes" .done-val-s1001 --frames 24 --sequences 40 --seed 1001 --split val \
  --cutouts "$out/photos" --cutout-split val --backgrounds "$out/backgrounds-val" --object-size 0.06 0.45 --defocus 0.4 \
  --scenes "$out/photos" --scene-split val --scene-share 1
log "done: $out"
