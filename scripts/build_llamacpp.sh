#!/usr/bin/env bash
# Build llama.cpp's llama-quantize, llama-imatrix and llama-perplexity into .llamacpp/bin/.
#
# Source: the llama.cpp vendored in the llama-cpp-python==0.3.36 sdist, the same version the
# `kquants` extra pins and the one that produced the llama.cpp fixtures, so every GGUF member and
# every cross-check comes from one pinned llama.cpp. The sdist comes through pip (a package
# registry), which every machine of ours can reach; GitHub cannot be.
#
# Usage: scripts/build_llamacpp.sh [PREFIX]   (default PREFIX: .llamacpp; PYTHON picks the pip)
# Idempotent: exits at once if the three binaries exist and run.
set -euo pipefail

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PREFIX=${1:-.llamacpp}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}
TOOLS=(llama-quantize llama-imatrix llama-perplexity)

die() { echo "make llamacpp: error: $*" >&2; exit 1; }

have_all() {
  for t in "${TOOLS[@]}"; do
    [ -x "$PREFIX/bin/$t" ] || return 1
  done
  # GGML_NATIVE binaries copied from another machine (a CI cache) may hit an illegal instruction
  # (exit 132) or miss a shared library (127); rebuild then. --help itself exits 0 or 1.
  local rc=0
  "$PREFIX/bin/llama-quantize" --help >/dev/null 2>&1 || rc=$?
  [ "$rc" -le 1 ]
}

if have_all; then
  echo "llama.cpp tools present in $PREFIX/bin (delete it to rebuild)"
  exit 0
fi

command -v cmake >/dev/null 2>&1 || die "cmake not found; install it (Debian: apt-get install cmake) and rerun"
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || die "no C compiler (cc/gcc) found; install one (Debian: apt-get install build-essential) and rerun"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || die "no C++ compiler (c++/g++) found; install one (Debian: apt-get install build-essential) and rerun"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip; set PYTHON=/path/to/python with pip (it downloads the sdist)"

mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
WORK="$PREFIX/src"
mkdir -p "$WORK"

SDIST=$(ls "$WORK"/llama_cpp_python-$VERSION.tar.gz 2>/dev/null || true)
if [ -z "$SDIST" ]; then
  echo "downloading llama-cpp-python==$VERSION sdist (pip)"
  # --no-binary for this package only, not :all:, which would also build from source the build
  # backend (scikit-build-core) that pip installs just to read the sdist's metadata.
  "$PYTHON" -m pip download --quiet --no-binary llama-cpp-python --no-deps -d "$WORK" "llama-cpp-python==$VERSION" \
    || die "pip could not download the llama-cpp-python==$VERSION sdist; check access to PyPI and rerun"
  SDIST=$(ls "$WORK"/llama_cpp_python-$VERSION.tar.gz 2>/dev/null) || die "pip left no llama_cpp_python-$VERSION.tar.gz in $WORK"
fi

echo "$SDIST_SHA256  $SDIST" | sha256sum --check --status \
  || die "$SDIST does not have the pinned sha256 $SDIST_SHA256; delete it and rerun"

SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  rm -rf "$WORK/llama_cpp_python-$VERSION"
  tar -xzf "$SDIST" -C "$WORK" || die "cannot unpack $SDIST; delete it and rerun"
  [ -f "$SRC/CMakeLists.txt" ] || die "$SDIST has no vendor/llama.cpp/CMakeLists.txt; delete it and rerun"
fi

BUILD="$WORK/build"
# A build folder configured from another path (a moved checkout) makes cmake refuse; start it afresh.
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
echo "configuring llama.cpp (Release, GGML_NATIVE=ON)"
# Static libraries: the three binaries are then self-contained and can be copied into bin/.
# LLAMA_CURL is gone from this llama.cpp version (it warns and ignores it); LLAMA_OPENSSL=OFF keeps
# the HTTP client from looking for OpenSSL, which these offline tools never use.
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >"$WORK/configure.log" 2>&1 \
  || die "cmake configure failed: $(grep -m1 -i 'error' "$WORK/configure.log" || tail -n1 "$WORK/configure.log") (full log: $WORK/configure.log)"
echo "building ${TOOLS[*]} with -j$JOBS (about 4-6 min on 2 cores)"
cmake --build "$BUILD" --config Release -j"$JOBS" --target "${TOOLS[@]}" >"$WORK/build.log" 2>&1 \
  || die "build failed: $(grep -m1 -E 'error|Error' "$WORK/build.log" || tail -n1 "$WORK/build.log") (full log: $WORK/build.log)"

# Copy through a temp name, so an interrupted install never leaves a half-written binary that
# have_all would take for a finished one.
mkdir -p "$PREFIX/bin"
for t in "${TOOLS[@]}"; do
  [ -x "$BUILD/bin/$t" ] || die "build finished but $BUILD/bin/$t is missing (full log: $WORK/build.log)"
  cp "$BUILD/bin/$t" "$PREFIX/bin/.$t.tmp"
  mv "$PREFIX/bin/.$t.tmp" "$PREFIX/bin/$t"
done
echo "installed ${TOOLS[*]} into $PREFIX/bin"
