# Set-up is idempotent: the venv is created once and re-installed only when
# pyproject.toml changes (the stamp file records the last install).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup ops test demo bench clean

setup: $(STAMP) ops

# The custom-op build caches itself (source + TensorFlow version): fast when up to date.
ops: $(STAMP)
	test ! -f custom_ops/build.py || $(PY) custom_ops/build.py

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) main.py --config=configs/quickstart.py --workdir=runs/quickstart

bench: setup
	$(PY) bench/solvers.py

clean:
	rm -rf $(VENV) build *.egg-info
