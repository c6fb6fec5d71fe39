#!/usr/bin/env bash
# Build llama.cpp's llama-quantize, llama-imatrix and llama-perplexity into .llamacpp/bin/, and the
# shared libraries they run on (libllama, libggml*) into .llamacpp/lib/: ONE llama.cpp build, used by
# the tools and, in-process, by the llama.cpp engine through llama-cpp-python (installed with
# LLAMA_BUILD=OFF by `make llamacpp`: it then compiles nothing and loads these libraries through
# LLAMA_CPP_LIB_PATH, which silentzone.engines.llamacpp sets).
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

# AMX off at compile time. GGML_NATIVE builds with -march=native, which on a CPU with AMX (Intel
# Sapphire Rapids and later) defines __AMX_INT8__ and compiles in ggml's AMX weight-repacking buffer
# type, although the CMake cache says GGML_AMX_*=OFF; on quantized GGUFs its matmul
# (ggml_backend_amx_mul_mat) crashes llama-perplexity and llama-imatrix with a segmentation fault
# unless every run passes --no-repack. GCC and Clang let an explicit -mno-* win over -march=native
# whatever the order, so these flags remove that code path on every CPU, AMX or not, and the tools
# run as a user runs them, with no flag. The cost: no AMX matmuls on AMX CPUs (AVX-512/AVX2 kernels
# and their own repacking stay). The flags are recorded in $PREFIX/build-flags; a cached build
# without them is rebuilt. tests/test_llamacpp.py checks llama.cpp's own system info reports no AMX.
NO_AMX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# CMAKE_EXTRA: further cmake options, e.g. CMAKE_EXTRA="-DGGML_CUDA=ON" for llama.cpp's CUDA build
# (docs/engines.md, GPU); recorded with the flags, so a build with other options is rebuilt.
CMAKE_EXTRA=${CMAKE_EXTRA:-}
BUILD_FLAGS="GGML_NATIVE=ON; CFLAGS/CXXFLAGS: $NO_AMX_FLAGS; BUILD_SHARED_LIBS=ON${CMAKE_EXTRA:+; $CMAKE_EXTRA}"
LIBS=(libllama.so libggml.so libggml-base.so libggml-cpu.so)

have_all() {
  for t in "${TOOLS[@]}"; do
    [ -x "$PREFIX/bin/$t" ] || return 1
  done
  for l in "${LIBS[@]}"; do
    [ -e "$PREFIX/lib/$l" ] || return 1
  done
  [ "$(cat "$PREFIX/build-flags" 2>/dev/null)" = "$BUILD_FLAGS" ] || return 1
  # GGML_NATIVE binaries copied from another machine (a CI cache) may hit an illegal instruction
  # (exit 132) or miss a shared library (127); rebuild then. --help itself exits 0 or 1.
  local t rc
  for t in "${TOOLS[@]}"; do
    rc=0
    "$PREFIX/bin/$t" --help >/dev/null 2>&1 || rc=$?
    [ "$rc" -le 1 ] || return 1
  done
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
echo "configuring llama.cpp (Release, GGML_NATIVE=ON, AMX off)"
# Shared libraries, so the binding loads the very code the tools run. The tools find them through
# their RPATH ($ORIGIN/../lib), set at build time, so they run from PREFIX/bin without LD_LIBRARY_PATH.
# LLAMA_CURL is gone from this llama.cpp version (it warns and ignores it); LLAMA_OPENSSL=OFF keeps
# the HTTP client from looking for OpenSSL, which these offline tools never use.
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DCMAKE_C_FLAGS="$NO_AMX_FLAGS" -DCMAKE_CXX_FLAGS="$NO_AMX_FLAGS" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib;$ORIGIN' $CMAKE_EXTRA >"$WORK/configure.log" 2>&1 \
  || die "cmake configure failed: $(grep -m1 -i 'error' "$WORK/configure.log" || tail -n1 "$WORK/configure.log") (full log: $WORK/configure.log)"
echo "building ${TOOLS[*]} with -j$JOBS (about 4-6 min on 2 cores)"
cmake --build "$BUILD" --config Release -j"$JOBS" --target "${TOOLS[@]}" llama >"$WORK/build.log" 2>&1 \
  || die "build failed: $(grep -m1 -E 'error|Error' "$WORK/build.log" || tail -n1 "$WORK/build.log") (full log: $WORK/build.log)"

# Copy through a temp name, so an interrupted install never leaves a half-written binary that
# have_all would take for a finished one.
mkdir -p "$PREFIX/bin" "$PREFIX/lib"
# Libraries first (every shared library of the build: the ones the binding loads, and the tools' own
# llama-common and *-impl libraries; cp -P keeps a SONAME link a link), then the tools that load them.
for l in "${LIBS[@]}"; do
  [ -e "$BUILD/bin/$l" ] || die "build finished but $BUILD/bin/$l is missing (full log: $WORK/build.log)"
done
for f in "$BUILD"/bin/lib*.so*; do
  cp -P "$f" "$PREFIX/lib/.$(basename "$f").tmp"
  mv "$PREFIX/lib/.$(basename "$f").tmp" "$PREFIX/lib/$(basename "$f")"
done
for t in "${TOOLS[@]}"; do
  [ -x "$BUILD/bin/$t" ] || die "build finished but $BUILD/bin/$t is missing (full log: $WORK/build.log)"
  cp "$BUILD/bin/$t" "$PREFIX/bin/.$t.tmp"
  mv "$PREFIX/bin/.$t.tmp" "$PREFIX/bin/$t"
done
echo "$BUILD_FLAGS" > "$PREFIX/build-flags.tmp" && mv "$PREFIX/build-flags.tmp" "$PREFIX/build-flags"
echo "installed ${TOOLS[*]} into $PREFIX/bin, ${LIBS[*]} into $PREFIX/lib"
