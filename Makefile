# Two commands for a new machine: `make demo` and `make test`. Both build .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spikecc-installed

.PHONY: demo test bench lint clean venv

venv: $(STAMP)

# torch 2.13.0 first and alone (a CPU wheel on disk; anything else pulls a CUDA build),
# then lava-nc 0.10.0 without its Python<3.11 check and without deps (lava-nc 0.10.0 declares
# Requires-Python <3.11; its requirements are resolved by the next step; see spikecc/lava_compat.py),
# then the project, which resolves lava's own requirements normally.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --ignore-requires-python --no-deps lava-nc==0.10.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps norse==1.1.0 sinabs==3.1.3 rockpool==3.1.0  # pyproject: exporters
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_mapping.py
	$(BIN)/python benchmarks/bench_onnx_host.py
	$(BIN)/python benchmarks/bench_lava_lm.py
	$(BIN)/python benchmarks/bench_compile.py

lint: $(STAMP)
	$(BIN)/ruff check spikecc tests examples benchmarks

clean:
	rm -rf $(VENV) build demo-build
