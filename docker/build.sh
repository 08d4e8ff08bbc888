#!/usr/bin/env bash
# Builds the release `fruits` binary that EMR 7 nodes run, and checks it.
#
# EMR 7 nodes run Amazon Linux 2023, whose glibc is 2.34. A binary linked on
# a newer system (Debian 12 has 2.36) may ask for symbol versions that 2.34
# lacks, and then fails to start on every node (the bootstrap action catches
# it, but only once a cluster is paid for). So the build links against
# glibc 2.34 itself, wherever it runs: cargo-zigbuild uses zig as the linker
# and zig ships the stubs of every glibc version, selected by the target's
# suffix (x86_64-unknown-linux-gnu.2.34). The same script runs here, in CI
# (.ci/run) and inside docker/Dockerfile (Amazon Linux 2023 itself).
#
#   docker/build.sh                 install the tools if needed, build, check,
#                                   write target/dist/fruits and fruits.sha256
#   docker/build.sh --out DIR       write them to DIR instead
#   docker/build.sh --check-only    no tools, no build: check the binary already
#                                   at target/glibc234/.../release/fruits, write
#                                   nothing
#   docker/build.sh -- ARGS...      pass ARGS to cargo zigbuild (e.g. -- --timings)
#   docker/build.sh --test [-- ARGS...]
#                                   first run the Rust test suite built for the
#                                   same target, profile and folder (cargo
#                                   zigbuild test --release ARGS...), so the
#                                   integration tests run the very binary that
#                                   ships, and the build after them compiles
#                                   nothing again (.ci/run does this: one
#                                   release build of the dependencies, not a
#                                   test build and then a release build)
#
# The checks, any of which fails the script naming what is wrong:
#   - no symbol needs a glibc version above 2.34 (objdump -T);
#   - no CUDA library is linked (readelf -d, NEEDED): the binary loads
#     libcuda/libcublas/libnvrtc at run time with dlopen (cudarc's
#     dynamic-loading), so the same file starts on CPU nodes, which have none;
#   - the binary runs `--version`.
#
# How the output is used: `emr/fruits-emr run|up|demo --binary
# target/dist/fruits` uploads it, with its sha256 in the manifest, to
# s3://BUCKET/emr/<artifact id>/fruits, where the bootstrap action installs
# it on every node (their default, --binary target/release/fruits, is a
# plain cargo build, linked against this machine's glibc, which may be newer
# than the nodes': pass --binary). `deploy` uploads no binary: it only makes
# the stack. To put it in S3 by hand: `aws s3 cp target/dist/fruits
# s3://BUCKET/...`, and check a copy with `sha256sum -c fruits.sha256` in
# the folder holding both.
#
# Tools, installed inside the checkout (gitignored) so a rerun reuses them,
# and reinstalled when their version is not the pinned one:
#   .tools/zig-venv/  ziglang and cargo-zigbuild from PyPI (zig itself and
#                     cargo-zigbuild's binary, as wheels)
# Needs: cargo (rustup), python3 with venv, cc (rustc links build scripts
# with it), binutils (objdump, readelf), sha256sum.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
GLIBC_MAX=2.34
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=target/glibc234
BIN="$TARGET_DIR/$TARGET/release/fruits"
# Libraries that must never be NEEDED: the CUDA runtime and driver, the math
# libraries, NVRTC, cuDNN, NVML. They are dlopen'ed, or absent on CPU nodes.
CUDA_LIB_RE='^lib(cuda|cudart|cublas|cublasLt|nvrtc|nvrtc-builtins|cudnn|curand|cufft|cusparse|cusolver|nccl|nvidia-ml)([.-]|$)'

out=target/dist
check_only=false
run_tests=false
cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ $# -ge 2 ] || { echo "docker/build.sh: --out needs a folder" >&2; exit 2; }
      out=$2
      shift 2
      ;;
    --check-only) check_only=true; shift ;;
    --test) run_tests=true; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; cargo_args=("$@"); break ;;
    *) echo "docker/build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "docker/build.sh: $*" >&2; exit 1; }
if $check_only && $run_tests; then
  echo "docker/build.sh: --test builds and runs the tests, --check-only builds nothing: pick one" >&2
  exit 2
fi

# Fail now, with the package to install, rather than halfway through.
for tool in objdump readelf sha256sum; do
  command -v "$tool" > /dev/null || die "no $tool on PATH: install binutils/coreutils"
done

if ! $check_only; then
  command -v cargo > /dev/null || die "no cargo on PATH: install Rust (rustup)"

  # zig and cargo-zigbuild, both from PyPI's wheels (zig itself, and
  # cargo-zigbuild as the binary its project builds): no download outside
  # the package registries, and no compile of cargo-zigbuild (a minute).
  have() { .tools/zig-venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
  if [ "$(have ziglang)" != "$ZIGLANG_VERSION" ] || [ "$(have cargo-zigbuild)" != "$CARGO_ZIGBUILD_VERSION" ]; then
    echo "docker/build.sh: installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $CARGO_ZIGBUILD_VERSION into .tools/zig-venv" >&2
    # A venv whose python no longer runs (python3 replaced) is made anew.
    .tools/zig-venv/bin/python -c '' 2> /dev/null || python3 -m venv --clear .tools/zig-venv
    .tools/zig-venv/bin/python -m pip install --quiet --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  fi

  # `cargo-zigbuild build|test` is `cargo build|test` linked by zig, which
  # it finds as `python3 -m ziglang` (the venv's python3, first on PATH).
  # The target folder is separate from target/release (linked against this
  # machine's glibc) so neither build invalidates the other, and reruns are
  # incremental.
  zigbuild() {
    PATH="$PWD/.tools/zig-venv/bin:$PATH" \
      "$PWD/.tools/zig-venv/bin/cargo-zigbuild" "$1" --locked --release --target "$TARGET.$GLIBC_MAX" --target-dir "$TARGET_DIR" "${@:2}"
  }
  if $run_tests; then
    # The bench profile that `test --release` uses inherits release's, and
    # the dependencies get the release profile itself: the units below are
    # the same, so the build after the tests only finds them fresh.
    echo "docker/build.sh: cargo zigbuild test --release --target $TARGET.$GLIBC_MAX" >&2
    zigbuild test ${cargo_args[@]+"${cargo_args[@]}"}
    cargo_args=()
  fi
  echo "docker/build.sh: cargo zigbuild --release --target $TARGET.$GLIBC_MAX" >&2
  start=$(date +%s)
  zigbuild build --bin fruits ${cargo_args[@]+"${cargo_args[@]}"}
  echo "docker/build.sh: built in $(( $(date +%s) - start )) s" >&2
fi

[ -f "$BIN" ] || die "no binary at $BIN: build it first (docker/build.sh without --check-only)"

# 1. glibc: every GLIBC_x.y version a dynamic symbol is bound to, each with
# one symbol that needs it. objdump -T prints "(GLIBC_2.34) name" or, for
# the default version, "GLIBC_2.34 name"; the symbol is the last field.
glibc_syms=$(objdump -T "$BIN" | awk '{
  for (i = 1; i <= NF; i++) if (match($i, /GLIBC_[0-9]+(\.[0-9]+)+/)) {
    print substr($i, RSTART + 6, RLENGTH - 6), $NF; break
  } }' | sort -t' ' -k1,1V -u)
[ -n "$glibc_syms" ] || die "$BIN binds no symbol to a GLIBC version: not a glibc binary?"
glibc_max=$(tail -n1 <<< "$glibc_syms" | cut -d' ' -f1)
too_new=$(awk -v max="$GLIBC_MAX" '{
  split($1, v, "."); split(max, m, ".");
  if (v[1] + 0 > m[1] + 0 || (v[1] + 0 == m[1] + 0 && v[2] + 0 > m[2] + 0)) print "GLIBC_" $1 " (" $2 ")"
}' <<< "$glibc_syms")
[ -z "$too_new" ] || die "$BIN needs glibc above $GLIBC_MAX, which EMR 7 nodes lack: $(paste -sd' ' <<< "$too_new")"

# 2. Shared libraries, from the dynamic section (no loader run, so this
# reads the same on any host).
needed=$(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
cuda=$(grep -E "$CUDA_LIB_RE" <<< "$needed" || true)
[ -z "$cuda" ] || die "$BIN links CUDA libraries, which CPU nodes lack and which must be dlopen'ed: $(paste -sd' ' <<< "$cuda")"

# 3. It starts (on this machine's glibc, which is no older than 2.34; the
# version check above is what says it starts on the nodes too).
version=$("$BIN" --version) || die "$BIN --version failed"
case "$version" in fruits\ *) ;; *) die "$BIN --version printed '$version', not 'fruits VERSION'" ;; esac

size=$(stat -c %s "$BIN")
summary="max GLIBC_$glibc_max (limit $GLIBC_MAX), NEEDED $(paste -sd' ' <<< "$needed"), $version"
if $check_only; then
  sha=$(sha256sum "$BIN" | cut -d' ' -f1)
  echo "docker/build.sh: OK $BIN: $size bytes, sha256 $sha, $summary"
  exit 0
fi

# Write the binary under a temporary name and rename it, so a reader of $out
# never sees half a file; the checksum file names it relatively, so
# `sha256sum -c fruits.sha256` works from inside $out (and after a download).
mkdir -p "$out"
cp "$BIN" "$out/.fruits.tmp"
chmod 0755 "$out/.fruits.tmp"
mv -f "$out/.fruits.tmp" "$out/fruits"
(cd "$out" && sha256sum fruits > fruits.sha256.tmp && mv -f fruits.sha256.tmp fruits.sha256)
sha=$(cut -d' ' -f1 "$out/fruits.sha256")
echo "docker/build.sh: wrote $out/fruits: $size bytes, sha256 $sha, $summary"
