#!/usr/bin/env bash
# Do composites set in whole real photos (`vsod-train synth --scenes`) help on objects and scenery
# that no model has seen? Judged on holdout-data.sh's held-out sets by docs/training/verdict.py, a
# rule committed before either run below had finished:
#
#   OMP_WAIT_POLICY=PASSIVE nohup setsid nice -n 10 bash docs/training/scenes.sh >> /work/logs/scenes.log 2>&1 &
#
# The control is holdout.sh's last stage, holdout-8: holdout-6 + 1,500 steps of version 8's recipe
# (composites 0.5, composites-varied 0.5). The candidate, holdout-8-scenes, is the same run with
# composites-varied's share drawn from composites-scenes instead (the same style, half its clips set
# in whole train photos, their own objects salient). Same start, steps, seed and data otherwise.
# It waits for holdout-6, runs beside holdout.sh's last stage (THREADS=1), waits for holdout-8, scores
# both and prints the verdict:
#   - held-out mean S (held photos, held composites, held scenes) at least 0.01 above the control's,
#     and no held-out set, val-wide, synthetic or motion-only set more than 0.01 of S below it;
#   - flicker on consecutive real frames at most 0.001 above the control's.
# Passing, the change goes to the shipped lineage next (version 6 + the same 1,500 steps over scenes
# made from all photos, against version 8); box.mp4 and cup.mp4 are reported after that choice only.
set -euo pipefail
cd "$(dirname "$0")/../.."
export THREADS=${THREADS:-1}  # before lib.sh, whose default is 2: this run shares the cores with holdout.sh's
source docs/training/lib.sh

bash docs/training/holdout-data.sh
while [[ ! -f $STORE/holdout-6/manifest.json ]]; do sleep 60; done
NAME=holdout-8-scenes INIT=$RUNS/holdout-6/last.pt SHARES="1 0.5 3 3 2" EXTRA_DATA="$HELD/composites-scenes@0.5" \
  PHOTOS=$HELD/photos COMPOSITES=$HELD/composites SERVE_SIZES=288 SCORE=0 TKD_WEIGHT=3 bash docs/training/motion-mix.sh
while [[ ! -f $STORE/holdout-8-288/manifest.json ]]; do sleep 60; done

for model in holdout-8-scenes-288 holdout-8-288; do
  score "$STORE" "$model" "$HELD_SCORES" "${HELD_SETS[@]}" "${VALIDATION_SETS[@]}"
done
python3 docs/training/verdict.py "$HELD_SCORES" holdout-8-scenes-288 holdout-8-288 || true
log "done: $HELD_SCORES"
