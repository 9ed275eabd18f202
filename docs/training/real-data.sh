#!/usr/bin/env bash
# Real training and validation data for the default model, labelled by the ISNet teacher.
#
#   VSOD_TEACHER_CACHE=/work/cache/teachers bash docs/training/real-data.sh /work/data/real
#
# Needs Debian's opencv-doc and desktop-base (apt-get install opencv-doc desktop-base), the [train]
# extra (scikit-image, scikit-learn's sample images come with it) and npm for the teacher. Resumable:
# rerun it after an interruption and it labels only what is missing. 2-11 s a frame on the 2-core development VM (2 s on a fast day, 2026-12-02).
#
# Sources, as issue "Real-world accuracy" allows them: opencv-doc's videos and photos, the images that
# scikit-image and scikit-learn ship. box.mp4 and cup.mp4 are never used (evaluation only), nor are
# opencv-doc's box.png / box_in_scene.png, which could resemble them. Calibration boards, text, logos,
# plots and the second image of each stereo or flow pair are left out: they show no salient object.
#
# Validation (split "val", its own root) is kept out of training: the later part of each video, after
# a gap. tree.avi is left out: the teacher finds no object in it (every map empty), and a sequence
# without an object scores only how little a model marks, not whether it finds the object.
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # real_photos (no cd: OUT_ROOT may be relative)
out=${1:?usage: real-data.sh OUT_ROOT}
data=/usr/share/doc/opencv-doc/examples/data
label() { nice -n 10 vsod-train label --teacher isnet "$@"; }

vsod-train fetch-teacher isnet

# Validation: never trained on.
label "$data/vtest.avi" --start 650 --stride 15 --split val --out "$out/val"
label "$data/Megamind.avi" --start 215 --stride 5 --split val --out "$out/val"
# The same parts frame by frame (vtest.avi runs at 10 frames/s, Megamind.avi at 24): flicker on real video.
label "$data/vtest.avi" --start 650 --max-frames 30 --split val --out "$out/val-consecutive"
label "$data/Megamind.avi" --start 215 --max-frames 30 --split val --out "$out/val-consecutive"
# The whole held-out parts (vtest.avi every 2nd frame, Megamind.avi every frame; 128 frames): the
# 17-frame set above is too small to rank runs (model report, "Measured since release").
label "$data/vtest.avi" --start 650 --stride 2 --split val --out "$out/val-wide"
label "$data/Megamind.avi" --start 215 --split val --out "$out/val-wide"

# Photos: one-frame sequences, also the cut-outs of the real-object composites.
mapfile -t photos < <(real_photos)
label "${photos[@]}" --split train --out "$out/photos"

# Videos, up to the validation part (and a gap before it).
label "$data/vtest.avi" --stride 10 --max-frames 60 --split train --out "$out/train"
label "$data/Megamind.avi" --stride 4 --max-frames 50 --split train --out "$out/train"
