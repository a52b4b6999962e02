PY ?= python3

.PHONY: install dev wheel test ci lint format typecheck bench demo shakespeare readme clean

install:            ## install charrnn and its runtime dependencies (the bundled corpora included)
	$(PY) -m pip install .

dev:                ## install with test and lint tools
	$(PY) -m pip install -e '.[dev]'

# the installed setuptools builds the wheel offline if it can (70.1+ has bdist_wheel); an
# older one (a 3.11 venv's 65) or none (a 3.12 venv) makes pip fetch setuptools>=68 itself
BUILD_ISOLATION = $(shell $(PY) -c "import importlib.metadata as m, re; \
	v = tuple(map(int, re.match(r'(\d+)\.(\d+)', m.version('setuptools')).groups())); \
	print('--no-build-isolation' if v >= (70, 1) else '')" 2>/dev/null)

wheel:              ## build dist/charrnn_numpy-*.whl (offline when the installed setuptools is 70.1+)
	$(PY) -m pip wheel --no-deps $(BUILD_ISOLATION) -w dist .

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
