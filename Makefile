# keras_vdiff: the two commands a newcomer needs.
#   make demo   trains a tiny text-to-video model on generated MovingMNIST (CPU) and writes GIFs + a loss plot
#   make test   installs the dev extras and runs the test suite once per Keras backend
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=
# pytest-xdist workers (0: one process). On JAX and TensorFlow most of a test's time is single-threaded tracing
# and XLA compilation, so two processes keep a 2-core machine busy (a JAX subset: 92 s -> 72 s); whole files go to
# one worker (--dist loadfile), so a module's shared fixtures are built once. PyTorch's eager ops use every core
# already and two workers oversubscribe them (a subset: 23 s -> 42 s), so it runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_TORCH_WORKERS ?= 0
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: venv install demo test test-slow bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is installed first and pinned: the 2.13.0 CPU wheel, never a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[jax,torch,tensorflow,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) -m keras_vdiff.demo --output-dir outputs

test: install
	@status=0; summary=""; \
	for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  start=$$(date +%s); \
	  workers=$(PYTEST_WORKERS); [ $$b = torch ] && workers=$(PYTEST_TORCH_WORKERS); \
	  if KERAS_BACKEND=$$b $(PY) -m pytest -q -m "not slow" -p no:cacheprovider -n $$workers --dist loadfile $(PYTEST_ARGS); then r=ok; else r=FAILED; status=1; fi; \
	  summary="$$summary\n  $$b: $$r ($$(( $$(date +%s) - start ))s)"; \
	done; \
	printf "Per-backend summary:$$summary\n"; exit $$status

test-slow: install
	@status=0; for b in $(BACKENDS); do \
	  KERAS_BACKEND=$$b $(PY) -m pytest -q -m slow -p no:cacheprovider $(PYTEST_ARGS) || status=1; \
	done; exit $$status

clean:
	rm -rf outputs .pytest_cache build *.egg-info
