# The two set-up commands: `make demo` (the embedded default run) and `make test`.
# Each creates .venv, installs the CPU build of torch first (pinned in constraints.txt,
# so nothing pulls the CUDA wheels), the package with its test extras, and the Debian
# Fashion-MNIST dataset when it is missing.

VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.secateurs-installed
FMNIST   ?= /usr/share/datasets/fashion-mnist
PIP      := $(PY) -m pip install --quiet --disable-pip-version-check
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_WORKERS ?= 2
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# on a machine whose default index would serve the CUDA build.
TORCH_PIP_ARGS ?=

.PHONY: demo test dataset install bench-quick bench-full bench-matrix bench-gpu clean

demo: $(STAMP) dataset
	$(VENV)/bin/secateurs demo

test: $(STAMP) dataset
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_PIP_ARGS) -c constraints.txt torch==2.13.0
	$(PIP) -c constraints.txt -e ".[dev,export,plots]"
	touch $@

dataset:
	@test -f $(FMNIST)/train-images-idx3-ubyte.gz || { \
	  echo "installing the Debian package dataset-fashion-mnist into $(FMNIST)"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }; }

bench-quick: $(STAMP) dataset
	$(PIP) -c constraints.txt -e ".[dev,export,bench]"
	$(PY) benchmarks/baselines.py --profile quick
	$(PY) benchmarks/prune_filters.py --profile quick
	$(PY) benchmarks/prune_probability.py --profile quick
	$(PY) benchmarks/prune_kernels.py --profile quick
	$(PY) benchmarks/finetune_modes.py --profile quick

bench-full: $(STAMP) dataset
	$(PIP) -c constraints.txt -e ".[dev,export,bench]"
	$(PY) benchmarks/baselines.py --profile full
	$(PY) benchmarks/prune_filters.py --profile full
	$(PY) benchmarks/prune_probability.py --profile full
	$(PY) benchmarks/prune_kernels.py --profile full
	$(PY) benchmarks/finetune_modes.py --profile full

# The benchmark matrix (benchmarks/README.md): the CPU protocol from the committed converged
# baselines, resumable over sittings, and the same protocol at full scale on one large GPU
# (install torch with CUDA there, e.g. TORCH_PIP_ARGS naming a CUDA index). MATRIX_ARGS adds
# filters or --jobs K, e.g. MATRIX_ARGS="--models resnet20 --seeds 0".
MATRIX_ARGS ?=

bench-matrix: $(STAMP) dataset
	$(PIP) -c constraints.txt -e ".[dev,export,bench]"
	$(PY) benchmarks/matrix.py --profile converged $(MATRIX_ARGS)

bench-gpu: $(STAMP) dataset
	$(PIP) -c constraints.txt -e ".[dev,export,bench]"
	$(PY) benchmarks/matrix.py --profile gpu $(MATRIX_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
