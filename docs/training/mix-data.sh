#!/usr/bin/env bash
# The exact-mask parts of the real-world training mix (issue "Real-world accuracy"):
#
#   bash docs/training/mix-data.sh        # DATA=/work/data by default; REAL=$DATA/real
#
#   $DATA/synth       synthetic clips with exact masks, the motion-only camouflage cases included
#                     (train: 300 clips, seed 1; val: 40 clips, seed 1000)
#   $DATA/composites  objects cut out of the labelled photos ($REAL/photos) by the teacher's soft maps,
#                     pasted over Debian's desktop-base and gnome-backgrounds wallpapers (150 clips)
#   $DATA/composites-varied  the same objects and wallpapers, more varied: objects from small to large
#                     (--object-size 0.06 0.45) and 40% of clips with the scenery out of focus
#                     (--defocus 0.4); 150 clips, seed 2. motion-mix.sh takes it through EXTRA_DATA.
#
# The synthetic clips need no labels and start at once; the composites wait for the labelling job
# (docs/training/real-data.sh). Resumable: a marker file records each finished step, and a rerun
# skips it. real-mix.sh and real-ablation.sh run it first.
set -euo pipefail
cd "$(dirname "$0")/../.."
source docs/training/lib.sh
mapfile -t backgrounds < <(wallpaper_folders)

synth_once "$DATA/synth" .done-train-s1 --sequences 300 --frames 24 --seed 1 --split train
synth_once "$DATA/synth" .done-val-s1000 --sequences 40 --frames 24 --seed 1000 --split val

log "waiting for the labelling job (real-data.sh) to finish"
while pgrep -f "real-data.sh" > /dev/null; do sleep 30; done
for root in "$REAL/train" "$REAL/photos"; do
  [[ -f $root/labels.json ]] || { log "$root has no labels.json: run docs/training/real-data.sh first"; exit 1; }
done

synth_once "$DATA/composites" .done-train-s1 --sequences 150 --frames 24 --seed 1 --split train \
  --cutouts "$REAL/photos" --backgrounds "${backgrounds[@]}"
synth_once "$DATA/composites-varied" .done-train-s2 --sequences 150 --frames 24 --seed 2 --split train \
  --cutouts "$REAL/photos" --backgrounds "${backgrounds[@]}" --object-size 0.06 0.45 --defocus 0.4
