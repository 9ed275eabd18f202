#!/bin/bash
# Fine-tune the shipped default with and without distillation: same seed, steps, lr (the control).
set -e
export OMP_WAIT_POLICY=PASSIVE
COMMON="--data /work/data/synth --data /work/data/synth2 --input-size 256 --clip-len 3 --batch 8 --steps 400 --lr 5e-4 --warmup 20 --seed 1 --threads 1 --no-progress --save-every 50 --init-from model_store/vsod-student"
T=/work/runs/ablation/runs
vsod-train train --out /work/runs/ft/plain $COMMON
vsod-train distill --out /work/runs/ft/kd $COMMON --spatial-teacher $T/teacher-spatial/last.pt --temporal-teacher $T/teacher-temporal/last.pt
echo FT-DONE
