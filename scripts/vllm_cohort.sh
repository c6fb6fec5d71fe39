#!/usr/bin/env bash
# The cohort with every member behind its own vLLM server, on this machine (docs/server.md):
#   scripts/vllm_cohort.sh [MEMBER ...]           (make vllm-cohort; PARAMS=file to use another params file)
# Needs `make vllm` (vLLM in .vllm/) and a finished `silentzone reference` and `silentzone bench reference`.
# The server engine runs as an engine of `engine.also` (docs/engines.md): its outputs go to
# data/engines/server/, beside the in-process ones; the reference's stores are the run's own (linked).
# For each member, one at a time (a vLLM takes ~5 GB and every core): write it as a float32 Hugging Face
# directory (`silentzone server export`), serve it, run `silentzone fidelity` and `silentzone bench` with
# `--engine server`, stop the server. Last, each member's top-k KLD beside the in-process table in
# data/fidelity/ where one exists (scripts/compare_engines.py: exit 1 above the tolerance, 1e-4 per token).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python; SZ=$PWD/.venv/bin/silentzone; VPY=$PWD/.vllm/bin/python
PARAMS=${PARAMS:-params.yaml}; PORT=${VLLM_PORT:-8011}; RUN=runs/vllm
test -x "$VPY" || { echo "vllm_cohort: vLLM is not installed; run \`make vllm\`" >&2; exit 2; }
mkdir -p "$RUN" data/engines/server/bench
ln -sfn ../../reference data/engines/server/reference
for f in reference.parquet reference.stamp.json; do ln -sfn "../../../bench/$f" "data/engines/server/bench/$f"; done
MEMBERS=${*:-$("$PY" -c "import yaml, sys; print(' '.join(yaml.safe_load(open(sys.argv[1]))['cohort']))" "$PARAMS")}
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true' EXIT
for m in $MEMBERS; do
  "$PY" - "$PARAMS" "$RUN/params-$m.yaml" "$m" "$PORT" <<'PY'
import sys, yaml
src, dst, member, port = sys.argv[1:]
raw = yaml.safe_load(open(src))
engine = raw.setdefault("engine", {})
engine["also"] = sorted(set(engine.get("also", [])) | {"server"})
engine["server"] = {"members": {member: {"url": f"http://127.0.0.1:{port}/v1", "model": member}}, "concurrency": 2}
yaml.safe_dump(raw, open(dst, "w"), sort_keys=False)
PY
  P="$RUN/params-$m.yaml"
  "$SZ" --params "$P" server export "$m" --out "data/served/$m"
  start=$(date +%s)
  VLLM_CPU_KVCACHE_SPACE=2 nice "$VPY" -m vllm.entrypoints.openai.api_server --model "data/served/$m" --served-model-name "$m" \
    --dtype float32 --max-logprobs 20 --host 127.0.0.1 --port "$PORT" > "$RUN/vllm-$m.log" 2>&1 &
  server=$!
  until curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null; do
    kill -0 "$server" 2>/dev/null || { echo "vllm_cohort: vLLM died starting $m; see $RUN/vllm-$m.log" >&2; exit 2; }
    sleep 5
  done
  echo "$m: vLLM ready in $(( $(date +%s) - start )) s"
  s=$(date +%s); "$SZ" --params "$P" fidelity "$m" --engine server; echo "$m: fidelity through vLLM $(( $(date +%s) - s )) s"
  s=$(date +%s); "$SZ" --params "$P" bench "$m" --engine server; echo "$m: bench through vLLM $(( $(date +%s) - s )) s"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done
"$PY" scripts/compare_engines.py data/fidelity data/engines/server/fidelity $MEMBERS
