PY ?= python3

.PHONY: install dev test lint format typecheck bench demo shakespeare clean

install:            ## install charrnn and its runtime dependencies
	$(PY) -m pip install -e .

dev:                ## install with test and lint tools
	$(PY) -m pip install -e '.[dev]'

test:               ## the test suite (what CI runs)
	$(PY) -m pip install -q -e '.[test]' && $(PY) -m pytest -q

lint:               ## ruff
	$(PY) -m ruff check charrnn tests bench

format:
	$(PY) -m ruff format charrnn tests bench

typecheck:
	$(PY) -m mypy charrnn

demo:               ## train on the bundled dinosaur names, then sample some
	$(PY) -m pip install -q -e . && $(PY) -m charrnn train && $(PY) -m charrnn sample -n 10

shakespeare:        ## the 5-minute recipe: a 2x256 GRU on tiny-shakespeare, then a sample
	$(PY) -m charrnn train data/tinyshakespeare.txt --run shakespeare --cell gru --layers 2 \
	  --hidden 256 --lr 3e-3 --dropout 0.1 --lr-decay 0.7 --lr-decay-every 800 --time 5m
	$(PY) -m charrnn sample shakespeare --temperature 0.8 --length 400

bench:              ## charrnn against PyTorch CPU (pip install torch==2.13.0 first)
	$(PY) bench/bench.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
