#!/bin/bash
# Peak RSS of one fidelity stage at two corpus lengths: is memory flat in the number of windows?
#
#   bash benchmarks/fidelity_memory.sh [PROFILE] [QUANT] [WINDOWS...]     (default: gemma q8_0 2 8)
#
# For each window count: a run folder under benchmarks/out/fidelity_memory/w<N>/ (git-ignored) with
# `silentzone profile PROFILE` and fidelity.n_windows = N; `prepare`, `reference`, one `fidelity QUANT`
# to build and cache the quant (as a pipeline's first stage does), then the measured `fidelity QUANT`
# under /usr/bin/time -v. Prints one line per window count: peak RSS, wall time, scored tokens.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${1:-gemma}; QUANT=${2:-q8_0}; shift $(( $# < 2 ? $# : 2 )) || true
WINDOWS=${*:-2 8}
export PATH="$REPO/.venv/bin:$PATH" PYTHONPATH="$REPO/src" OMP_WAIT_POLICY=PASSIVE
for w in $WINDOWS; do
  d="$REPO/benchmarks/out/fidelity_memory/w$w"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  cp -r "$REPO/profiles" .
  silentzone profile "$PROFILE" >/dev/null
  sed -i "s/^  n_windows: .*/  n_windows: $w/" params.yaml
  silentzone prepare >prepare.log 2>&1
  silentzone reference >reference.log 2>&1
  silentzone fidelity "$QUANT" >warm.log 2>&1
  rm -rf data/fidelity/"$QUANT".* data/fidelity/.parts
  /usr/bin/time -v silentzone fidelity "$QUANT" >fidelity.log 2>&1
  rss=$(grep 'Maximum resident' fidelity.log | awk '{print $NF}')
  wall=$(grep 'Elapsed (wall' fidelity.log | awk '{print $NF}')
  tokens=$(python -c "import json; print(json.load(open('data/fidelity/$QUANT.report.json'))['n_tokens'])")
  echo "$PROFILE $QUANT windows $w: peak RSS $(python -c "print(f'{$rss/1048576:.3f}')") GiB, wall $wall, scored tokens $tokens, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
