# Set-up is idempotent: the venv is created once and re-installed only when
# pyproject.toml changes (the stamp file records the last install).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup ops test demo bench docs clean

setup: $(STAMP) ops

# The C++ op, into the per-user cache (~/.cache/sdis_tf/ops; sdis_tf also builds it on first
# use): fast when up to date.
ops: $(STAMP)
	test ! -f custom_ops/build.py || $(PY) custom_ops/build.py

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77'  # SPDX license field
	$(PY) -m pip install --quiet -e '.[test,bench,docs]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) -m sdis_tf.sweep --config=configs/quickstart.py --sweep=methods --workdir=runs/quickstart --parallel=2

bench: setup
	$(PY) bench/solvers.py

# API reference from the docstrings (pdoc, the `docs` extra), into docs/api/ (git-ignored).
docs: setup
	rm -rf docs/api
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m pdoc --no-show-source -o docs/api sdis_tf

clean:
	rm -rf $(VENV) build *.egg-info
