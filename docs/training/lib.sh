# Shared by the docs/training scripts: source it, don't run it.

log() { echo "[$(date -u +%FT%TZ)] $*"; }

# model_at REV DEST: the default model as commit REV shipped it, copied into the model-store folder
# DEST once. Runs start from a fixed version, whatever model_store/ holds today.
model_at() {
  local rev=$1 dest=$2 file
  [[ -f $dest/manifest.json ]] && return
  mkdir -p "$dest.tmp"
  for file in $(git ls-tree --name-only "$rev" model_store/vsod-student/); do
    git show "$rev:$file" > "$dest.tmp/$(basename "$file")"
  done
  mv "$dest.tmp" "$dest"
}

# The default model's versions, by the commit that shipped each.
VERSION_1=78d1c92  # synthetic clips only: where the real-world runs start
VERSION_2=37967cf  # docs/training/real-mix.sh's run
