#!/usr/bin/env bash
# Version 8's lineage replayed without the held-out photos and wallpapers (holdout-data.sh), so that
# the runs after it can be chosen on objects and scenery that no model in it has seen:
#
#   OMP_WAIT_POLICY=PASSIVE nohup setsid nice -n 10 bash docs/training/holdout.sh >> /work/logs/holdout.log 2>&1 &
#
# Each stage is a shipped version's own command, with the photos and composites swapped for their
# train parts ($DATA/holdout/photos split train, $DATA/holdout/composites and composites-varied):
#   holdout-2  version 1 + real-mix.sh for 1,865 steps (version 2's run stopped there, by time)
#   holdout-5  holdout-2 + TKD_WEIGHT=3 motion-mix.sh (version 5's run)
#   holdout-6  holdout-5 + SHARES="2 2 2 2 2" (version 6's run)
#   holdout-8  holdout-6 + SHARES="1 0.5 3 3 2" and composites-varied at 0.5 (version 8's run)
# Each is served as its version is (holdout-2 at 256, the others at 288) and scored on the held-out
# photos, composites and scenes, val-wide, and motion-mix.sh's sets, into $RUNS/holdout-scores. The shipped
# versions are scored on the held-out sets too: they saw those objects and wallpapers, so the gap
# between version N and holdout-N is what having seen them is worth. Resumable: a stage resumes its
# run, or is skipped once its model is stored.
set -euo pipefail
cd "$(dirname "$0")/../.."
source docs/training/lib.sh
export PHOTOS=$HELD/photos COMPOSITES=$HELD/composites SERVE_SIZES=288 SCORE=0

bash docs/training/holdout-data.sh
SETS=("${HELD_SETS[@]}" "${VALIDATION_SETS[@]}")

if [[ ! -f $STORE/holdout-2/manifest.json ]]; then
  RUN=$RUNS/holdout-2 STEPS=1865 bash docs/training/real-mix.sh
  vsod-train export --checkpoint "$RUNS/holdout-2/last.pt" --name holdout-2 --store "$STORE" --speed-frames 5 --no-progress
fi
score "$STORE" holdout-2 "$HELD_SCORES" "${SETS[@]}"

NAME=holdout-5 INIT=$RUNS/holdout-2/last.pt TKD_WEIGHT=3 bash docs/training/motion-mix.sh
NAME=holdout-6 INIT=$RUNS/holdout-5/last.pt SHARES="2 2 2 2 2" TKD_WEIGHT=3 bash docs/training/motion-mix.sh
NAME=holdout-8 INIT=$RUNS/holdout-6/last.pt SHARES="1 0.5 3 3 2" EXTRA_DATA="$HELD/composites-varied@0.5" \
  TKD_WEIGHT=3 bash docs/training/motion-mix.sh
for model in holdout-5-288 holdout-6-288 holdout-8-288; do
  score "$STORE" "$model" "$HELD_SCORES" "${SETS[@]}"
done

for version in 1 2 5 6 8; do
  version_var=VERSION_$version
  model_at "${!version_var}" "$STORE/vsod-student-v$version"
done
for model in vsod-student-v1 vsod-student-v2 vsod-student-v5 vsod-student-v6 vsod-student-v8; do
  score "$STORE" "$model" "$HELD_SCORES" "${HELD_SETS[@]}"
done
log "done: $HELD_SCORES"
