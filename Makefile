# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Compile the CUDA ops too (for sm_90) wherever nvcc is present, as a build check.
CFCAM_CUDA ?= $(shell command -v nvcc >/dev/null 2>&1 && echo 1 || echo 0)

.PHONY: demo test check bench lint typecheck docs install clean

$(STAMP): setup.py pyproject.toml $(wildcard CMakeLists.txt csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet "setuptools>=77" wheel pybind11 cmake ninja
	CFCAM_CUDA=$(CFCAM_CUDA) $(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cfcam-fast explain

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -ra

# The inner loop: lint, types and every test not marked slow, in two worker processes (each
# test file in one of them), about 2 minutes on 2 cores.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -ra -m "not slow" -n 2 --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/cfcam-fast bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist site *.egg-info cfcam_fast/*.so cfcam_fast/_native_build.json
