#!/usr/bin/env bash
# Can the motion branch learn to find objects that only motion reveals? A capacity check, not a model
# to ship: version 2 fine-tuned on motion-only clips alone, with the branch (--motion-channels 8) and,
# as the control, without it, at one small budget (300 steps of 4 three-frame clips at 192x192).
# Both, and version 2 itself, are scored on the motion-only validation clips at 192x192.
#
#   OMP_WAIT_POLICY=PASSIVE nohup setsid nice -n 10 bash docs/training/motion-capacity.sh >> /work/logs/motion-capacity.log 2>&1 &
#
# Data: $DATA/motion (train: 100 clips, seed 3; val: 20 clips, seed 2000; `vsod-train synth
# --camouflage 1`, made here if missing). Resumable like the other scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
source docs/training/lib.sh
STEPS=${STEPS:-300}
SIZE=192
INIT=$RUNS/models/version-2

motion_clips train val
model_at "$VERSION_2" "$INIT"
mkdir -p "$STORE"
for row in branch control; do
  run=$RUNS/motion-capacity-$row
  extra=()
  [[ $row == branch ]] && extra=(--motion-channels 8)
  train_run "$run" --init-from "$INIT" "${extra[@]}" --data "$DATA/motion" --split train --input-size "$SIZE" \
    --clip-len 3 --batch 4 --lr 5e-4 --warmup 20 --steps "$STEPS" --seed 0 --save-every 50
  [[ -f $STORE/motion-capacity-$row/manifest.json ]] || vsod-train export --checkpoint "$run/last.pt" \
    --name "motion-capacity-$row" --store "$STORE" --speed-frames 5 --no-progress
done
model_at "$VERSION_2" "$STORE/vsod-student-v2"
served_at "$STORE" vsod-student-v2 "$SIZE"
for model in "vsod-student-v2-$SIZE" motion-capacity-control motion-capacity-branch; do
  score "$STORE" "$model" "$RUNS/motion-capacity-scores" "motion=$DATA/motion"
done
log "done: $RUNS/motion-capacity-scores"
