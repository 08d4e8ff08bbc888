#!/usr/bin/env bash
# EMR bootstrap action: installs the `fruits` binary on every node.
#
#   bootstrap.sh s3://BUCKET/emr/ARTIFACT/
#
# The folder holds `fruits`, `featurize_job.py` (the PySpark driver) and
# `fruits.json`, their manifest ({"version", "sha256", "driver_sha256",
# "cuda_driver_min"}), as `fruits-emr` uploads them. On every node: copy
# them, check each sha256 against the manifest, install the binary to
# /usr/local/bin/fruits and the driver to /usr/local/lib/fruits/, and check
# that the binary starts. On a GPU node
# (an NVIDIA device on the PCI bus), check that the NVIDIA driver answers
# and is at least the version the binary's CUDA build needs, and fail
# loudly otherwise: a GPU node silently featurising on its CPU would cost
# GPU prices for CPU speed.
#
# Idempotent (an installed binary with the right hash is kept); any failure
# exits non-zero, which makes EMR fail the node's bootstrap. Everything goes
# to the bootstrap log (stdout/stderr: EMR keeps them under the log URI,
# node/<id>/bootstrap-actions/) and to /var/log/fruits-bootstrap.log.
#
# Overridable for tests: FRUITS_INSTALL_DIR (default /usr/local/bin),
# FRUITS_LIB_DIR (default /usr/local/lib/fruits), FRUITS_BOOTSTRAP_LOG,
# SUDO (default sudo when not root).
set -euo pipefail

SRC=${1:?usage: bootstrap.sh s3://BUCKET/emr/ARTIFACT/}
SRC=${SRC%/}
INSTALL_DIR=${FRUITS_INSTALL_DIR:-/usr/local/bin}
LIB_DIR=${FRUITS_LIB_DIR:-/usr/local/lib/fruits}
LOG=${FRUITS_BOOTSTRAP_LOG:-/var/log/fruits-bootstrap.log}
if [ -z "${SUDO+set}" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
fi

log() { echo "fruits-bootstrap: $*"; }
fail() { log "FAILED: $*" >&2; exit 1; }

# Mirror everything to our own log as well as EMR's.
if $SUDO touch "$LOG" 2>/dev/null && $SUDO chmod a+w "$LOG" 2>/dev/null; then
  exec > >(tee -a "$LOG") 2>&1
fi
log "$(date -u +%FT%TZ) on $(hostname): installing fruits from $SRC"

json_field() { # FILE FIELD
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
aws s3 cp --only-show-errors "$SRC/fruits.json" "$tmp/fruits.json" || fail "cannot copy $SRC/fruits.json"
want=$(json_field "$tmp/fruits.json" sha256)
[[ $want =~ ^[0-9a-f]{64}$ ]] || fail "$SRC/fruits.json has no sha256"

dest="$INSTALL_DIR/fruits"
if [ -x "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
  log "fruits $want is already installed at $dest"
else
  aws s3 cp --only-show-errors "$SRC/fruits" "$tmp/fruits" || fail "cannot copy $SRC/fruits"
  got=$(sha256sum "$tmp/fruits" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "sha256 of $SRC/fruits is $got, its manifest says $want"
  $SUDO install -m 0755 "$tmp/fruits" "$dest" || fail "cannot install to $dest"
  log "installed fruits $want at $dest"
fi
version=$("$dest" --version 2>&1) || fail "$dest does not start on this node: $version"
log "$version"

driver_sha=$(json_field "$tmp/fruits.json" driver_sha256)
aws s3 cp --only-show-errors "$SRC/featurize_job.py" "$tmp/featurize_job.py" || fail "cannot copy $SRC/featurize_job.py"
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
if has_gpu; then
  command -v nvidia-smi > /dev/null || fail "an NVIDIA GPU is present but nvidia-smi is not: no driver installed"
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1 | head -n1) ||
    fail "nvidia-smi does not answer: $driver"
  [[ $driver =~ ^[0-9]+(\.[0-9]+)*$ ]] || fail "nvidia-smi answered '$driver', not a driver version"
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
  need=$(json_field "$tmp/fruits.json" cuda_driver_min)
  log "GPU $gpu, NVIDIA driver $driver${need:+, fruits needs >= $need}"
  if [ -n "$need" ] && [ "${driver%%.*}" -lt "${need%%.*}" ]; then
    fail "NVIDIA driver $driver is older than $need, which this fruits build needs"
  fi
else
  log "no NVIDIA GPU on this node: fruits runs on its CPU"
fi
log "done"
