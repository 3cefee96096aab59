# Two commands do all the set-up on a fresh machine:
#   make demo   -> installs into .venv, then trains the demo runs on generated data
#   make test   -> installs into .venv (and Debian's chromium), lints, runs the test suite
#   make test-fast -> the tests not marked slow or browser (under a minute), for editing loops
#   make notebooks -> regenerates notebooks/*.ipynb from their jupytext sources notebooks/*.py
.PHONY: demo test test-fast lint serve env notebooks

env:
	bash scripts/setup-env.sh

demo: env
	.venv/bin/fae-lab demo --runs runs/demo

serve: env
	.venv/bin/fae-lab serve --runs runs/demo

lint: env
	.venv/bin/ruff check fae_lab lab tests benchmarks notebooks scripts

test:
	bash scripts/setup-env.sh --browser
	.venv/bin/ruff check fae_lab lab tests benchmarks notebooks scripts
	.venv/bin/python -m pytest -n 2 --timeout 600

test-fast: env
	.venv/bin/python -m pytest -n 2 -m "not slow and not browser"

notebooks: env
	.venv/bin/python scripts/sync_notebooks.py
