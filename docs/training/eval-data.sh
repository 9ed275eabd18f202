#!/usr/bin/env bash
# An other-scene real test set, for reports only: opencv-doc's cup.mp4 and box.mp4, labelled by the
# ISNet teacher, in their own root that no training script reads.
#
#   VSOD_TEACHER_CACHE=/work/cache/teachers bash docs/training/eval-data.sh      # DATA=/work/data by default
#
#   $DATA/real-eval   split "test": box.mp4 every 15th frame (31 frames), cup.mp4 every 7th (31 frames)
#
# Issue "Real-world accuracy" reserves these two clips for evaluation: never train on them, never tune
# on them. They are the only real footage within the allowed sources that no model has seen (the
# validation frames of docs/training/real-data.sh are later parts of the two training videos), so
# they show how a model does on another camera and scene. Use them that way only: choose between
# candidates on the validation sets, then report this set for the chosen model and the versions
# before it (lib.sh's `score` with `real-eval=$DATA/real-eval@test`). Resumable like
# real-data.sh; about 60 teacher frames.
set -euo pipefail
cd "$(dirname "$0")/../.."
source docs/training/lib.sh
media=$DATA/eval-media
mkdir -p "$media"
for name in box cup; do  # shipped gzipped in the HTML docs
  [[ -f $media/$name.mp4 ]] || { gunzip -c "/usr/share/doc/opencv-doc/opencv4/html/$name.mp4.gz" > "$media/$name.mp4.tmp" \
    && mv "$media/$name.mp4.tmp" "$media/$name.mp4"; }
done
vsod-train fetch-teacher isnet
nice -n 10 vsod-train label --teacher isnet "$media/box.mp4" --stride 15 --split test --out "$DATA/real-eval"
nice -n 10 vsod-train label --teacher isnet "$media/cup.mp4" --stride 7 --split test --out "$DATA/real-eval"
