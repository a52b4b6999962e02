"""The benchmark's matmul-only limit of sampling (bench/limit.py) and its verdicts (bench/bench.py).

A limit is only as good as its list of products: each must have the shape of one of charrnn's
parameters (every weight read once per character), and the list must be exactly the matrix
products the sampler's kernel calls, so that a change to the kernel shows up here. The
figures derived from the product times, and the summary's split of the sampling targets into
"not met" and "beyond the limit", are checked on given numbers. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from charrnn.cells import CELLS
from charrnn.model import CharRNN, ModelConfig, param_shapes
from charrnn.sampler import Kernel

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


limit = _load("limit")
bench = _load("bench")
split_threads = _load("split_threads")

V = 65  # tiny-shakespeare's vocabulary, as in the benchmark
BENCH_SHAPES = [(1, 128), (2, 256), (2, 512)]  # (L, H) of configs a, b, c


def test_recurrent_blocks_are_the_cells_gates():
    assert set(limit.RECURRENT_BLOCKS) == set(CELLS)
    for name, cell in CELLS.items():
        assert sum(limit.RECURRENT_BLOCKS[name]) == len(cell.gates)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(("L", "H"), BENCH_SHAPES)
@pytest.mark.parametrize("B", [1, 256])
def test_sample_products_have_the_parameters_shapes(cell, L, H, B):
    shapes = param_shapes(ModelConfig(vocab_size=V, cell=cell, hidden=H, layers=L))
    stacked = CELLS[cell].stacks_input
    products = limit.sample_products(cell, V, H, L, B, stacked)
    assert all(p.n == B and p.count == 1 and p.phase == "sample" for p in products)

    gather, *matmuls = products
    assert gather.gather and not any(p.gather for p in matmuls)
    assert (gather.m, gather.k) == (shapes["l0.Wax"][0], V + 1)  # the table's columns, +x<1>=0
    assert gather.flops == 0 and gather.weight_bytes == 4 * gather.m * B

    output = matmuls[-1]
    assert (output.what, output.m, output.k) == ("output", *shapes["Wya"])
    for layer in range(L):
        mine = [p for p in matmuls if p.what.startswith(f"l{layer} ")]
        Wax, Waa = shapes[f"l{layer}.Wax"], shapes[f"l{layer}.Waa"]
        if layer and stacked:  # [Wax | Waa] @ [x<t>; a<t-1>]
            assert [(p.m, p.k) for p in mine] == [(Wax[0], Wax[1] + Waa[1])]
            continue
        if layer:
            inputs = [p for p in mine if p.what.endswith("input")]
            assert [(p.m, p.k) for p in inputs] == [Wax]
        recurrent = [p for p in mine if p.what.endswith("recurrent")]
        assert sum(p.m for p in recurrent) == Waa[0]  # every gate block once
        assert {p.k for p in recurrent} == {Waa[1]}
        assert len(recurrent) == len(limit.RECURRENT_BLOCKS[cell])

    # every weight matrix read once a character: Waa of each layer, Wax above layer 0, Wya
    weights = sum(np.prod(s) for n, s in shapes.items() if n.endswith(("Waa", "Wya")))
    weights += sum(np.prod(shapes[f"l{i}.Wax"]) for i in range(1, L))
    assert sum(p.m * p.k for p in matmuls) == weights
    assert sum(p.weight_bytes for p in matmuls) == 4 * weights
    assert sum(p.flops for p in products) == 2 * B * weights


def test_a_cell_with_two_recurrent_products_cannot_stack():
    with pytest.raises(ValueError, match="cannot stack"):
        limit.sample_products("gru", V, 8, 2, 1, stacked=True)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 3, 20])
def test_sample_products_are_the_kernels_products(cell, L, B, monkeypatch):
    """Every product (np.matmul or np.dot) of one kernel step, by shape, is one of the limit's
    products."""
    H = 6
    model = CharRNN(
        ModelConfig(vocab_size=11, cell=cell, hidden=H, layers=L), rng=np.random.default_rng(0)
    )
    kernel = Kernel(model)
    state = kernel.initial_state(B)
    ids = np.arange(B) % 11
    kernel.step(ids, state)  # buffers made outside the recording

    called = []

    def recording(product):
        def record(a, b, *args, **kwargs):
            called.append((a.shape[0], a.shape[1], b.shape[1]))
            return product(a, b, *args, **kwargs)

        return record

    monkeypatch.setattr(np, "matmul", recording(np.matmul))
    monkeypatch.setattr(np, "dot", recording(np.dot))
    kernel.step(ids, state)
    monkeypatch.undo()

    products = limit.sample_products(cell, 11, H, L, B, CELLS[cell].stacks_input)
    gather = products[0]
    assert sorted(called) == sorted((p.m, p.k, p.n) for p in products[1:])
    assert (gather.m, gather.k) == kernel.table0_cols.shape


def test_limit_figures_from_given_times():
    products = limit.sample_products("lstm", V, 8, 2, 4, stacked=False)
    secs = [1e-6 * (i + 1) for i in range(len(products))]
    fig = limit.sample_limit_figures(products, secs, 4)
    total = sum(secs)
    weight_bytes = 4 * (4 * 8 * 4 + 3 * 4 * 8 * 8 + V * 8)  # gather (4H×B), 3 (4H×H), Wya
    assert fig["step_s"] == pytest.approx(total)
    assert fig["chars_per_s"] == pytest.approx(4 / total)
    assert fig["weight_bytes_per_step"] == weight_bytes
    assert fig["weight_bytes_per_char"] == pytest.approx(weight_bytes / 4)
    assert fig["weight_gbps"] == pytest.approx(weight_bytes / total / 1e9)
    assert fig["gflops"] == pytest.approx(2 * 4 * (3 * 4 * 8 * 8 + V * 8) / total / 1e9)
    assert [p["seconds"] for p in fig["products"]] == secs


def test_against_limit_says_what_the_target_needs():
    lim = {"chars_per_s": 1000.0, "weight_bytes_per_char": 2e6}
    within = limit.against_limit({"charrnn": 400.0, "pytorch": 50.0}, lim, 10.0)
    assert within["charrnn"]["limit_fraction"] == pytest.approx(0.4)
    assert within["pytorch"]["limit_fraction"] == pytest.approx(0.05)
    assert within["charrnn"]["weight_gbps"] == pytest.approx(0.8)  # 400/s × 2 MB
    assert within["target_chars_per_s"] == pytest.approx(500)
    assert within["target_limit_fraction"] == pytest.approx(0.5)
    assert within["target_weight_gbps"] == pytest.approx(1.0)
    assert within["beyond_limit"] is False
    beyond = limit.against_limit({"charrnn": 400.0, "pytorch": 150.0}, lim, 10.0)
    assert beyond["target_limit_fraction"] == pytest.approx(1.5)
    assert beyond["beyond_limit"] is True
    alone = limit.against_limit({"charrnn": 400.0}, lim, 10.0)  # without PyTorch: no target
    assert "beyond_limit" not in alone and "target_limit_fraction" not in alone


def test_time_sample_products_keeps_each_products_best():
    products = limit.sample_products("rnn", 5, 4, 2, 3, stacked=True)
    first = limit.time_sample_products(products, 2)
    assert len(first) == len(products) and all(s > 0 for s in first)
    assert limit.time_sample_products(products, 2, [0.0] * len(products)) == [0.0] * len(products)


def _row(cell, met, beyond, ratio, needs=None):
    row = {"cell": cell, "config": "a", "batch": 1, "met": met, "ratio": ratio}
    if needs is not None:
        row.update(
            beyond_limit=beyond, target_limit_fraction=needs, charrnn={"limit_fraction": 0.3}
        )
    return row


def test_sample_targets_set_beyond_the_limit_apart():
    rows = [
        _row("lstm", True, False, 12.0, 0.2),
        _row("gru", False, False, 4.0, 0.6),
        _row("rnn", False, True, 6.0, 1.4),
        _row("lstm", False, True, 7.0, 2.5),
    ]
    within, beyond = bench.sample_targets(1, 10.0, rows)
    assert within["target"] == "sampling batch 1 ≥ 10× PyTorch (within the matmul-only limit)"
    assert within["measured"].startswith("1/2 met, lowest 4.00× (gru a: needs 60% of the limit")
    assert (within["met"], within["status"]) == (False, "not met")
    assert beyond["target"] == "sampling batch 1 ≥ 10× PyTorch (beyond the matmul-only limit)"
    assert beyond["measured"] == "2/4 need more than the limit: lstm a 250%, rnn a 140%"
    assert (beyond["met"], beyond["status"]) == (False, "beyond limit")

    # met although the limit was measured low: met, not beyond
    (only,) = bench.sample_targets(1, 10.0, [_row("rnn", True, True, 11.0, 1.2)])
    assert (only["met"], only["status"]) == (True, "met")
    # all that fail are beyond the limit: the rest is met
    within, beyond = bench.sample_targets(1, 10.0, rows[:1] + rows[2:])
    assert (within["met"], within["status"], beyond["status"]) == (True, "met", "beyond limit")
    # rows without a limit (no PyTorch, or an older JSON): the plain target line
    (plain,) = bench.sample_targets(256, 1.5, [_row("gru", False, None, 1.2)])
    assert plain["target"] == "sampling batch 256 ≥ 1.5× PyTorch"
    assert plain["measured"] == "0/1 met, lowest 1.20× (gru a)"
    assert bench.sample_targets(1, 10.0, []) == []


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_split_threads_times_the_recurrence_whole_and_in_halves(cell):
    """bench/split_threads.py's measurement runs a cell's forward and backward, on one
    thread and on two over halves of the batch (the figures themselves are the bench's)."""
    for threads in (1, 2):
        secs = split_threads.measure(cell, H=8, B=4, T=3, threads=threads, repeats=1)
        assert 0 < secs < 0.1


names_gap = _load("names_gap")


def test_names_gap_runs_the_trainer_on_each_batch_source():
    """bench/names_gap.py: the uniform lines it times against dinos have no padding (so
    their gap to prose is the per-step cost alone), and every source trains."""
    rng = np.random.default_rng(0)
    lb = names_gap._uniform_lines(7, 70, np.arange(1, 27), 0, rng)
    for k in range(lb.n_batches):
        b = lb.for_step(k)
        assert b.x.shape[1] == 7 and b.n_chars == b.x.size
    r = names_gap.measure(1, hidden=8, steps_per_round=2)
    assert 0.9 < r["fill"] < 1.0  # dinos.txt's batches pad a few percent
    assert set(r["rows"]) >= {"names, dinos", "prose, dinos"}
    assert all(row["chars_per_s"] > 0 for row in r["rows"].values())
    assert np.isfinite([r["fit"]["F_s"], r["fit"]["c_s"]]).all()
