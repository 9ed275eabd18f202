#!/usr/bin/env bash
# The first rows of issue "Real-world accuracy"'s ablation, at the budget of docs/training/real-mix.sh's
# run (1,975 steps of 8 three-frame clips at 256x256 from the default model, seed 0, peak lr 5e-4):
#
#   OMP_WAIT_POLICY=PASSIVE nohup setsid nice -n 10 bash docs/training/real-ablation.sh >> /work/logs/real-ablation.log 2>&1 &
#
#   exact   synthetic clips and real-object composites only (exact masks), 1/2 each
#   soft    the same plus the ISNet teacher's soft maps of real frames: real-mix.sh's run itself
#           (synthetic 3/8, composites 3/8, real video 1/8, real photos 1/8), i.e. map-level spatial KD
#
# Then both are exported to $STORE and scored on the synthetic validation clips and on the real
# validation set (docs/training/real-data.sh: teacher-labelled later frames of vtest.avi and
# Megamind.avi, never trained on), with the default model beside them. Resumable: a finished step
# is skipped, a training run continues with --resume. Data: real-data.sh and real-mix.sh make it.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/work/data}
REAL=${REAL:-$DATA/real}
RUNS=${RUNS:-/work/runs}
STORE=${STORE:-$RUNS/store}
STEPS=${STEPS:-1975}
THREADS=${THREADS:-2}
log() { echo "[$(date -u +%FT%TZ)] $*"; }

train() {  # train NAME DATA_ARGS...
  local run=$RUNS/ablation-$1; shift
  if [[ -f $run/last.pt ]]; then
    vsod-train train --out "$run" --resume --threads "$THREADS" --no-progress
  else
    vsod-train train --init-from model_store/vsod-student "$@" --split train --out "$run" --input-size 256 \
      --clip-len 3 --batch 8 --lr 5e-4 --warmup 100 --steps "$STEPS" --seed 0 --threads "$THREADS" \
      --save-every 100 --no-progress
  fi
}

export_and_score() {  # export_and_score NAME CHECKPOINT
  local name=$1 checkpoint=$2
  if [[ ! -f $STORE/$name/manifest.json ]]; then
    vsod-train export --checkpoint "$checkpoint" --name "$name" --store "$STORE" --speed-frames 20 --no-progress
  fi
  for set in "real $REAL/val" "synth $DATA/synth"; do
    read -r label root <<<"$set"
    local out=$RUNS/ablation-scores/$name-$label.json
    [[ -f $out ]] || vsod-train eval --dataset davis --root "$root" --split val --model "$name" --store "$STORE" \
      --threads "$THREADS" --no-progress --json "$out"
  done
}

mkdir -p "$RUNS/ablation-scores"
log "exact: synthetic and composites only"
train exact --data "$DATA/synth@1" --data "$DATA/composites@1"
export_and_score ablation-exact "$RUNS/ablation-exact/last.pt"
log "soft: real-mix.sh's run"
[[ -f $RUNS/real-mix/last.pt ]] || { log "no $RUNS/real-mix/last.pt: run docs/training/real-mix.sh first"; exit 1; }
export_and_score ablation-soft "$RUNS/real-mix/last.pt"
log "the default model, for reference"
mkdir -p "$STORE" && [[ -e $STORE/vsod-student ]] || cp -r model_store/vsod-student "$STORE/"
export_and_score vsod-student ""
log "done: $RUNS/ablation-scores"
