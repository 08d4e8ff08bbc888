#!/usr/bin/env bash
# EMR bootstrap action: installs the `fruits` binary on every node.
#
#   bootstrap.sh s3://BUCKET/emr/ARTIFACT/ REGION
#
# REGION is the bucket's: every copy names it, so that it goes to that
# region's S3 endpoint, the one the nodes' private subnet reaches through
# its gateway endpoint. The CLI's own choice (its configured region, else
# us-east-1) may be another region, whose endpoint the subnet cannot reach.
#
# The folder holds `fruits`, `featurize_job.py` (the PySpark driver) and
# `fruits.json`, their manifest ({"version", "sha256", "driver_sha256",
# "cuda_driver_min", "cuda_libs": [{"name", "sha256"}]}), as `fruits-emr`
# uploads them; the CUDA wheels of "cuda_libs" are next to that folder, in
# s3://BUCKET/emr/cuda/<sha256>/<name> (shared by every artifact). On every
# node: copy them, check each sha256 against the manifest, install the
# binary to /usr/local/bin/fruits and the driver to /usr/local/lib/fruits/,
# and check that the binary starts. On a GPU node (an NVIDIA device on the
# PCI bus), check that the NVIDIA driver answers and is at least the version
# the binary's CUDA build needs, install the CUDA libraries the binary
# loads at run time (cuBLAS, NVRTC: the wheels, unpacked in
# /usr/local/lib/fruits/cuda/, their folders in the loader's cache through
# /etc/ld.so.conf.d/fruits-cuda.conf and ldconfig, since the binary runs
# with an empty environment: no LD_LIBRARY_PATH), and check with
# `fruits info` that the binary finds the GPU and compiles its kernels for
# it; fail loudly otherwise: a GPU node
# silently featurising on its CPU would cost GPU prices for CPU speed. The
# node needs S3, not the Internet.
#
# Idempotent (an installed binary or wheel with the right hash is kept);
# any failure exits non-zero, which makes EMR fail the node's bootstrap.
# Everything goes to the bootstrap log (stdout/stderr: EMR keeps them under
# the log URI, node/<id>/bootstrap-actions/) and to
# /var/log/fruits-bootstrap.log, root's, 0644: readable, not writable, by
# the other users of the node.
#
# Overridable for tests: FRUITS_INSTALL_DIR (default /usr/local/bin),
# FRUITS_LIB_DIR (default /usr/local/lib/fruits), FRUITS_BOOTSTRAP_LOG,
# FRUITS_LDCONF_DIR (default /etc/ld.so.conf.d), FRUITS_LDCONFIG (default
# /sbin/ldconfig), SUDO (default sudo when not root).
set -euo pipefail

SRC=${1:?usage: bootstrap.sh s3://BUCKET/emr/ARTIFACT/ REGION}
SRC=${SRC%/}
REGION=${2:?usage: bootstrap.sh s3://BUCKET/emr/ARTIFACT/ REGION}
INSTALL_DIR=${FRUITS_INSTALL_DIR:-/usr/local/bin}
LIB_DIR=${FRUITS_LIB_DIR:-/usr/local/lib/fruits}
LOG=${FRUITS_BOOTSTRAP_LOG:-/var/log/fruits-bootstrap.log}
LDCONF_DIR=${FRUITS_LDCONF_DIR:-/etc/ld.so.conf.d}
LDCONFIG=${FRUITS_LDCONFIG:-/sbin/ldconfig}
if [ -z "${SUDO+set}" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
fi

log() { echo "fruits-bootstrap: $*"; }
fail() { log "FAILED: $*" >&2; exit 1; }

# Mirror everything to our own log as well as EMR's, written by tee as the
# log's owner (sudo), not by making the file writable by everyone.
if $SUDO touch "$LOG" 2>/dev/null && $SUDO chmod 0644 "$LOG" 2>/dev/null; then
  exec > >($SUDO tee -a "$LOG") 2>&1
fi
log "$(date -u +%FT%TZ) on $(hostname): installing fruits from $SRC ($REGION)"
s3cp() { aws s3 cp --region "$REGION" --only-show-errors "$@"; }

json_field() { # FILE FIELD
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}
cuda_libs() { # FILE: "SHA256 NAME" of each CUDA wheel the manifest lists
  python3 -c 'import json, sys
for w in json.load(open(sys.argv[1])).get("cuda_libs") or []: print(w["sha256"], w["name"])' "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
s3cp "$SRC/fruits.json" "$tmp/fruits.json" || fail "cannot copy $SRC/fruits.json"
want=$(json_field "$tmp/fruits.json" sha256)
[[ $want =~ ^[0-9a-f]{64}$ ]] || fail "$SRC/fruits.json has no sha256"

dest="$INSTALL_DIR/fruits"
if [ -x "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
  log "fruits $want is already installed at $dest"
else
  s3cp "$SRC/fruits" "$tmp/fruits" || fail "cannot copy $SRC/fruits"
  got=$(sha256sum "$tmp/fruits" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "sha256 of $SRC/fruits is $got, its manifest says $want"
  $SUDO install -m 0755 "$tmp/fruits" "$dest" || fail "cannot install to $dest"
  log "installed fruits $want at $dest"
fi
version=$("$dest" --version 2>&1) || fail "$dest does not start on this node: $version"
log "$version"

driver_sha=$(json_field "$tmp/fruits.json" driver_sha256)
s3cp "$SRC/featurize_job.py" "$tmp/featurize_job.py" || fail "cannot copy $SRC/featurize_job.py"
got=$(sha256sum "$tmp/featurize_job.py" | cut -d' ' -f1)
[ "$got" = "$driver_sha" ] || fail "sha256 of $SRC/featurize_job.py is $got, its manifest says $driver_sha"
$SUDO mkdir -p "$LIB_DIR" || fail "cannot make $LIB_DIR"
$SUDO install -m 0644 "$tmp/featurize_job.py" "$LIB_DIR/featurize_job.py" || fail "cannot install the driver to $LIB_DIR"
log "installed the driver at $LIB_DIR/featurize_job.py"

# GPU nodes: the driver must answer, and be new enough for the CUDA build.
has_gpu() {
  if command -v lspci > /dev/null; then
    lspci -d 10de: 2> /dev/null | grep -q .
  else
    ls /dev/nvidia[0-9]* > /dev/null 2>&1
  fi
}
# The CUDA libraries the binary dlopens besides the driver's libcuda.so.1:
# cuBLAS (libcublas.so.12 loads libcublasLt.so.12) and NVRTC (which loads
# libnvrtc-builtins.so.12.x itself), from the wheels the manifest lists.
CUDA_DIR="$LIB_DIR/cuda"
install_cuda_libs() {
  local wheels sha name marker dirs=() d lib
  wheels=$(cuda_libs "$tmp/fruits.json") || fail "$SRC/fruits.json: cannot read its cuda_libs"
  [ -n "$wheels" ] || fail "$SRC/fruits.json lists no CUDA libraries (cuda_libs), which this GPU node needs:" \
    "start the cluster with fruits-emr and the CUDA wheels of emr/fetch_cuda_wheels.sh"
  $SUDO mkdir -p "$CUDA_DIR" || fail "cannot make $CUDA_DIR"
  while read -r sha name; do
    [[ $sha =~ ^[0-9a-f]{64}$ && $name =~ ^[A-Za-z0-9_.+-]+\.whl$ ]] ||
      fail "$SRC/fruits.json: bad cuda_libs entry '$name' '$sha'"
    marker="$CUDA_DIR/.$name.sha256"
    if [ "$(cat "$marker" 2> /dev/null)" = "$sha" ]; then
      log "$name is already installed in $CUDA_DIR"
      continue
    fi
    s3cp "${SRC%/*}/cuda/$sha/$name" "$tmp/$name" ||
      fail "cannot copy the CUDA wheel ${SRC%/*}/cuda/$sha/$name"
    got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || fail "sha256 of the CUDA wheel $name is $got, its manifest says $sha"
    # A wheel is a zip; python3's zipfile (Amazon Linux has no unzip by
    # default) keeps every member inside the folder.
    $SUDO python3 -m zipfile -e "$tmp/$name" "$CUDA_DIR" ||
      fail "cannot unpack the CUDA wheel $name into $CUDA_DIR"
    rm -f "$tmp/$name"
    echo "$sha" | $SUDO tee "$marker" > /dev/null || fail "cannot write $marker"
    log "installed the CUDA wheel $name in $CUDA_DIR"
  done <<< "$wheels"
  for d in "$CUDA_DIR"/nvidia/*/lib; do
    if compgen -G "$d/*.so*" > /dev/null; then dirs+=("$d"); fi
  done
  for lib in libcublas.so.12 libcublasLt.so.12 libnvrtc.so.12; do
    compgen -G "$CUDA_DIR/nvidia/*/lib/$lib" > /dev/null || fail "the CUDA wheels in $CUDA_DIR hold no $lib"
  done
  printf '%s\n' "${dirs[@]}" | $SUDO tee "$LDCONF_DIR/fruits-cuda.conf" > /dev/null ||
    fail "cannot write $LDCONF_DIR/fruits-cuda.conf"
  $SUDO "$LDCONFIG" || fail "$LDCONFIG failed"
  log "CUDA libraries in the loader's cache ($LDCONF_DIR/fruits-cuda.conf): ${dirs[*]}"
}

# `fruits info` says what the binary finds: the CUDA driver, cuBLAS and
# NVRTC versions and the devices, or why none is usable (it exits 0 either
# way, so its JSON is read); `--kernels ARCH` also compiles the CUDA kernels
# with NVRTC for the device's architecture, as the engine does (exit 1 if
# they do not compile). Run as Spark runs the binary, with an empty
# environment, so the libraries are found through the loader's cache only.
# A GPU node where either fails would featurise on its CPU: fail it. A
# binary older than the subcommand (clap: "unrecognized subcommand") has no
# CUDA engine to check: logged, not fatal.
fruits_clean() { env -i PATH=/usr/bin:/bin "$dest" "$@"; }
check_fruits_info() {
  local info arch out line
  if ! info=$(fruits_clean info --json 2> "$tmp/info.err"); then
    if grep -q "unrecognized subcommand" "$tmp/info.err"; then
      log "this fruits has no \`info\` subcommand: its CUDA engine is not checked"
      return
    fi
    fail "fruits info fails on this GPU node: $(cat "$tmp/info.err") $info"
  fi
  arch=$(python3 -c 'import json, sys
cuda = json.load(sys.stdin).get("cuda") or {}
devices = cuda.get("devices") or []
print(devices[0]["arch"] if devices else cuda.get("unavailable") or "no CUDA device listed")
sys.exit(0 if devices else 1)' <<< "$info") || fail "fruits finds no usable CUDA device on this GPU node: $arch"
  [[ $arch =~ ^sm_[0-9]+$ ]] || fail "fruits info gives the GPU's architecture as '$arch'"
  out=$(fruits_clean info --kernels "$arch" 2>&1) ||
    fail "fruits cannot compile its CUDA kernels for $arch on this node: $out"
  while IFS= read -r line; do log "fruits info: $line"; done <<< "$out"
}

if has_gpu; then
  command -v nvidia-smi > /dev/null || fail "an NVIDIA GPU is present but nvidia-smi is not: no driver installed"
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1 | head -n1) ||
    fail "nvidia-smi does not answer: $driver"
  [[ $driver =~ ^[0-9]+(\.[0-9]+)*$ ]] || fail "nvidia-smi answered '$driver', not a driver version"
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
  need=$(json_field "$tmp/fruits.json" cuda_driver_min)
  log "GPU $gpu, NVIDIA driver $driver${need:+, fruits needs >= $need}"
  if [ -n "$need" ] && [ "$(printf '%s\n' "$need" "$driver" | sort -V | head -n1)" != "$need" ]; then
    fail "NVIDIA driver $driver is older than $need, which this fruits build needs"
  fi
  install_cuda_libs
  check_fruits_info
else
  log "no NVIDIA GPU on this node: fruits runs on its CPU"
fi
log "done"
