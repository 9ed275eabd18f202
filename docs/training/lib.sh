# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source this file
# Shared by the docs/training scripts: source it, don't run it.

# Where data, runs and scored models live (outside the repository); each may be set in the environment.
DATA=${DATA:-/work/data}
REAL=${REAL:-$DATA/real}
RUNS=${RUNS:-/work/runs}
STORE=${STORE:-$RUNS/store}
HELD=${HELD:-$DATA/holdout}  # holdout-data.sh's held-out split, and the train parts beside it
HELD_SCORES=${HELD_SCORES:-$RUNS/holdout-scores}  # the score files of the runs chosen on it
THREADS=${THREADS:-2}

log() { echo "[$(date -u +%FT%TZ)] $*"; }

# real_photos: the photos real-data.sh labels (its header says which and why), one path a line, in a
# fixed order: photo_part holds photos out by their position in it.
real_photos() {
  local opencv=/usr/share/doc/opencv-doc/examples/data name folders
  mapfile -t folders < <(python3 - <<'PY'
import os, skimage, sklearn.datasets
print(os.path.join(os.path.dirname(skimage.__file__), "data"))
print(os.path.dirname(sklearn.datasets.load_sample_images().filenames[0]))
PY
)
  for name in Blender_Suzanne1.jpg HappyFish.jpg aero1.jpg aloeL.jpg apple.jpg baboon.jpg basketball1.png \
              blox.jpg building.jpg butterfly.jpg cards.png chicky_512.png ela_original.jpg fruits.jpg graf1.png \
              home.jpg leuvenA.jpg licenseplate_motion.jpg messi5.jpg orange.jpg pca_test1.jpg rubberwhale1.png \
              smarties.png squirrel_cls.jpg starry_night.jpg stuff.jpg; do
    echo "$opencv/$name"
  done
  for name in astronaut.png camera.png chelsea.png coffee.png coins.png horse.png motorcycle_left.png rocket.jpg; do
    echo "${folders[0]}/$name"
  done
  echo "${folders[1]}/china.jpg"
  echo "${folders[1]}/flower.jpg"
}

# photo_part train|val: real_photos split by holdout-data.sh's rule, fixed before any run used it:
# every 4th photo from the 2nd is held out (val, 9 of 36), the others are trained on (train), in order.
photo_part() {
  local part=$1 held index
  local -a photos
  case $part in
    train) held=0 ;;
    val) held=1 ;;
    *) log "photo_part: unknown part $part (train, val)"; return 1 ;;
  esac
  mapfile -t photos < <(real_photos)
  for index in "${!photos[@]}"; do
    if (( (index % 4 == 1) == held )); then echo "${photos[index]}"; fi
  done
}

# wallpaper_folders: the folders of Debian's desktop background packages present here (desktop-base,
# gnome-backgrounds), one a line: the composites' backgrounds.
wallpaper_folders() {
  local folder
  for folder in /usr/share/backgrounds /usr/share/wallpapers /usr/share/desktop-base; do
    if [[ -d $folder ]]; then echo "$folder"; fi
  done
}

# synth_once ROOT MARKER ARGS...: `vsod-train synth --out ROOT ARGS...` once; the marker file records
# that the split is complete, so a rerun skips it. It first waits for any other process still writing
# the same root (an earlier, interrupted or parallel start).
synth_once() {
  local root=$1 marker=$2; shift 2
  while pgrep -f -- "vsod-train synth --out $root " > /dev/null; do sleep 30; done
  if [[ -f $root/$marker ]]; then log "$root: $marker already generated"; return; fi
  log "generating $root ($marker)"
  nice -n 5 vsod-train synth --out "$root" "$@"
  touch "$root/$marker"
}

# The validation sets runs are scored on (`score`'s LABEL=ROOT arguments): the real frames, the same
# frame by frame (flicker), the synthetic clips and the motion-only ones; and holdout-data.sh's held-out
# photos, composites and scenes, with val-wide.
VALIDATION_SETS=("real=$REAL/val" "real-consecutive=$REAL/val-consecutive" "synth=$DATA/synth" "motion=$DATA/motion")
HELD_SETS=("held-photos=$HELD/photos" "held-composites=$HELD/composites-held"
           "held-scenes=$HELD/composites-held-scenes" "real-wide=$REAL/val-wide")

# model_at REV DEST: the default model as commit REV shipped it, copied into the model-store folder
# DEST once. Runs start from a fixed version, whatever model_store/ holds today.
# Runs started side by side may ask for the same model at once: each writes its own temporary copy,
# the first to rename it wins, and the others drop theirs.
model_at() {
  local rev=$1 dest=$2 file tmp
  [[ -f $dest/manifest.json ]] && return
  mkdir -p "$(dirname "$dest")"
  tmp=$(mktemp -d "$dest.XXXXXX")
  for file in $(git ls-tree --name-only "$rev" model_store/vsod-student/); do
    git show "$rev:$file" > "$tmp/$(basename "$file")"
  done
  mv -T "$tmp" "$dest" 2>/dev/null || { rm -rf "$tmp"; [[ -f $dest/manifest.json ]]; }
}

# train_run RUN ARGS...: `vsod-train train --out RUN ARGS...`, or, when RUN already holds a checkpoint,
# its --resume (which takes the run's own flags from the checkpoint).
train_run() {
  local run=$1; shift
  if [[ -f $run/last.pt ]]; then
    log "resuming $run"
    vsod-train train --out "$run" --resume --threads "$THREADS" --no-progress
  else
    log "training $run"
    vsod-train train --out "$run" "$@" --threads "$THREADS" --no-progress
  fi
}

# store_run NAME PHOTO_ROOT: real-mix.sh's run (version 1 + 1,865 steps, holdout.sh's first stage) with
# PHOTO_ROOT as its photos, stored at 256 under NAME once; SEED and COMPOSITES pass through to real-mix.sh.
store_run() {
  local name=$1 photo_root=$2
  [[ -f $STORE/$name/manifest.json ]] && return
  RUN=$RUNS/$name PHOTOS=$photo_root STEPS=1865 bash docs/training/real-mix.sh
  vsod-train export --checkpoint "$RUNS/$name/last.pt" --name "$name" --store "$STORE" --speed-frames 5 --no-progress
}

# labelled_views ROOT SPLIT PHOTO...: the photos and 10 random views of each (docs/training/views.py
# crops, seed 0; the view images in ROOT-src), all labelled by the teacher into ROOT's SPLIT. Resumable.
labelled_views() {
  local root=$1 split=$2; shift 2
  python3 docs/training/views.py crops "$root-src" --per-image 10 --seed 0 "$@"
  nice -n 10 vsod-train label --teacher isnet "$@" "$root-src"/*.png --split "$split" --out "$root"
}

# motion_clips SPLIT...: $DATA/motion, synthetic clips whose one object is cut from the scenery it moves
# over, so only its motion reveals it (`vsod-train synth --camouflage 1`), made once per split:
# train: 100 clips, seed 3; val: 20 clips, seed 2000.
motion_clips() {
  local name count seed
  for name in "$@"; do
    case $name in
      train) count=100 seed=3 ;;
      val) count=20 seed=2000 ;;
      *) log "motion_clips: unknown split $name (train, val)"; return 1 ;;
    esac
    [[ -f $DATA/motion/.done-$name-s$seed ]] && continue
    vsod-train synth --out "$DATA/motion" --sequences "$count" --frames 24 --seed "$seed" --split "$name" --camouflage 1
    touch "$DATA/motion/.done-$name-s$seed"
  done
}

# The default model's versions, by the commit that shipped each.
VERSION_1=78d1c92  # synthetic clips only: where the real-world runs start
VERSION_2=37967cf  # docs/training/real-mix.sh's run
VERSION_3=29c3027  # version 2's weights served at 320x320 (vsod-train export --from-model)
VERSION_4=2a8e49f  # version 2 + the motion branch, motion-mix.sh's run, served at 288x288
VERSION_5=3157ed7  # version 4's recipe with temporal KD: TKD_WEIGHT=3 motion-mix.sh, served at 288x288
VERSION_6=0ba2520  # version 5 + 1,500 steps, real share doubled: NAME=v5-real2 FROM=5 SHARES="2 2 2 2 2" TKD_WEIGHT=3 motion-mix.sh
VERSION_7=3c1801f  # version 6 + 1,500 steps, real share 3/10 each: NAME=v6-real3 FROM=6 SHARES="1 1 3 3 2" TKD_WEIGHT=3 motion-mix.sh
VERSION_8=3f0032a  # version 7's run with half the composites varied: NAME=v6-real3-varied FROM=6 SHARES="1 0.5 3 3 2" EXTRA_DATA=... motion-mix.sh

# score STORE MODEL OUT_DIR LABEL=ROOT[@SPLIT]...: score a stored model on the SPLIT (default val) of
# each ROOT once, into OUT_DIR/MODEL-LABEL.json (a file already there is kept).
score() {
  local store=$1 model=$2 out_dir=$3 set; shift 3
  mkdir -p "$out_dir"
  for set in "$@"; do
    local out=$out_dir/$model-${set%%=*}.json root=${set#*=} split=val
    [[ $root == *@* ]] && { split=${root##*@}; root=${root%@*}; }
    [[ -f $out ]] || vsod-train eval --dataset davis --root "$root" --split "$split" --model "$model" --store "$store" \
      --threads "${THREADS:-2}" --no-progress --json "$out"
  done
}

# served_at STORE MODEL SIZE: MODEL's weights served at SIZE x SIZE, stored once as MODEL-SIZE in STORE
# (`vsod-train export --from-model`: its step graph and speed measured again at that size).
served_at() {
  local store=$1 model=$2 size=$3
  [[ -f $store/$model-$size/manifest.json ]] || vsod-train export --from-model "$model" --input-size "$size" \
    --name "$model-$size" --store "$store" --speed-frames 5 --no-progress
}
