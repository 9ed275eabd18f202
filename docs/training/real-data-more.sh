#!/usr/bin/env bash
# More teacher-labelled training frames from the same two videos: the frames halfway between those
# real-data.sh labels (vtest.avi from frame 5, Megamind.avi from frame 2, at the same strides), so a
# clip of three labelled frames spans the same time as one from $REAL/train, and the validation part
# and its gap stay untouched.
#
#   VSOD_TEACHER_CACHE=/work/cache/teachers bash docs/training/real-data-more.sh /work/data/real
#
# Writes OUT_ROOT/train-more (108 frames). Resumable like real-data.sh, which it follows (the teacher
# is fetched there).
set -euo pipefail
out=${1:?usage: real-data-more.sh OUT_ROOT}
data=/usr/share/doc/opencv-doc/examples/data
label() { nice -n 10 vsod-train label --teacher isnet "$@"; }

vsod-train fetch-teacher isnet
label "$data/vtest.avi" --start 5 --stride 10 --max-frames 59 --split train --out "$out/train-more"
label "$data/Megamind.avi" --start 2 --stride 4 --max-frames 49 --split train --out "$out/train-more"
