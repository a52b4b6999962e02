PY ?= python3

.PHONY: install dev wheel test ci lint format typecheck bench demo shakespeare readme clean

install:            ## install charrnn and its runtime dependencies (the bundled corpora included)
	$(PY) -m pip install .

dev:                ## install with test and lint tools
	$(PY) -m pip install -e '.[dev]'

wheel:              ## build dist/charrnn_numpy-*.whl (no network: uses the installed setuptools)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

test:               ## the test suite
	$(PY) -m pip install -q -e '.[test]' && $(PY) -m pytest -q

ci:                 ## what CI runs: lint, tests, and a wheel installed in a fresh venv
	bash .ci/run

lint:               ## ruff
	$(PY) -m ruff check charrnn tests bench scripts

format:
	$(PY) -m ruff format charrnn tests bench scripts

typecheck:          ## mypy
	$(PY) -m mypy charrnn

demo:               ## train on the bundled dinosaur names, then sample some
	$(PY) -m pip install -q . && charrnn train && charrnn sample -n 10

shakespeare:        ## five minutes on tiny-shakespeare, configured automatically, then a sample
	$(PY) -m charrnn train data/tinyshakespeare.txt --time 5m
	$(PY) -m charrnn sample tinyshakespeare --temperature 0.8 --length 400

bench:              ## charrnn against PyTorch CPU (pip install torch==2.13.0 first)
	$(PY) bench/bench.py

readme:             ## rerun the ```console transcripts of README.md and docs/*.md, rewriting their output (not in CI)
	PYTHONPATH=$(CURDIR) $(PY) scripts/readme.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
