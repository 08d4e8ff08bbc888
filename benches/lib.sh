# shellcheck shell=bash
# Shared by the bench scripts: `source benches/lib.sh`.

# make_jpegs N DIR: N 100x100 JPEGs under DIR (the 19 sample photos of
# tests/data, cycled, in a Fruits-360 layout), made once.
make_jpegs() {
  local n=$1 data=$2
  [ -f "$data/.complete" ] && return
  rm -rf "$data"
  local src
  mapfile -t src < <(find tests/data/fruits-360-sample -name '*.jpg' | sort)
  for ((i = 0; i < n; i++)); do
    local f=${src[i % ${#src[@]}]}
    local label
    label=$(basename "$(dirname "$f")")
    mkdir -p "$data/Training/$label"
    cp "$f" "$data/Training/$label/$i.jpg"
  done
  touch "$data/.complete"
}
