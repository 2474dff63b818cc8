# regmix-plugin: `make test` and `make demo` work from a fresh clone; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a CPU wheel on machines of this project's kind (no CUDA); on a CPU machine that would
# otherwise get the CUDA build from PyPI, pass TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_INDEX ?=
TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple,)
# Tiny models train far faster on one thread per process than on oversubscribed OpenMP threads.
export OMP_NUM_THREADS ?= 1

.PHONY: install lint test test-fast science demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_FLAGS) -c .ci/constraints.txt torch
	$(BIN)/pip install -q -c .ci/constraints.txt -e ".[test]"
	# litdata requires torchvision, but only for images; PyPI's CUDA torchvision next to CPU torch breaks
	# `import torchmetrics` and with it `litgpt pretrain`, so it goes.
	$(BIN)/pip uninstall -q -y torchvision
	$(BIN)/python -c "import torch, torchmetrics, litgpt, litdata, regmix_plugin; print('torch', torch.__version__)"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The suite (< 8 min on 2 cores). The scientific end-to-end checks (pipeline recovers a known mixture, RegMix-D
# ground truths) train dozens of proxies each; they run as `make science`, which CI runs after `make test`.
test: install
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not science"  # one file per process: module fixtures are built once

science: install
	$(BIN)/pytest -q -n 2 --dist loadfile -m science

test-fast: install
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not slow and not science"

demo: install
	$(BIN)/regmix demo --out_dir demo_out --regmix_d true

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache demo_out
