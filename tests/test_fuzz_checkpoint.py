"""Fuzz the checkpoint loader: mutated metadata values, arrays of other dtypes and
shapes, and raw bytes. Each case either loads exactly as written (and a model loaded
from it samples without a warning) or is refused with one CheckpointError line (exit
65): never another exception (exit 1), never data other than what was written.

In the suite each strategy runs a bounded number of cases. For a longer run (cases
per strategy; the counts of each outcome are printed at the end):

    CHARRNN_FUZZ_EXAMPLES=3000 python -m pytest -s tests/test_fuzz_checkpoint.py
"""

from __future__ import annotations

import collections
import copy
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.errors import CharrnnError, CheckpointError
from charrnn.store import META_KEY, Store

ROOT = Path(__file__).resolve().parent.parent
COUNTS: collections.Counter[str] = collections.Counter()
FUZZ = settings(
    max_examples=int(os.environ.get("CHARRNN_FUZZ_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _train_one() -> tuple[dict[str, np.ndarray], dict[str, Any], int, bytes]:
    """A real checkpoint of a tiny model (names corpus, 4 steps, validation at 2 and 4)."""
    from charrnn.model import ModelConfig
    from charrnn.request import TrainRequest
    from charrnn.session import run_training
    from charrnn.trainer import TrainConfig

    tmp = Path(tempfile.mkdtemp(prefix="charrnn-fuzz-"))
    request = TrainRequest(
        corpus=(str(ROOT / "data" / "dinos.txt"),),
        store=tmp,
        model=ModelConfig(vocab_size=1, hidden=4, cell="gru"),
        train=TrainConfig(batch_size=2, seq_len=4, eval_every=2),
        steps=4,
    )
    result = run_training(request)
    assert result.checkpoint is not None
    ck = Store(tmp).load(result.checkpoint)
    return ck.arrays, ck.meta, ck.step, result.checkpoint.read_bytes()


ARRAYS, META, STEP, RAW = _train_one()

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree: dict keys and list indices."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            out += _paths(v, (*prefix, i))
    return out


META_PATHS = _paths(META)


def _set(tree: Any, path: tuple, value: Any, delete: bool) -> None:
    for key in path[:-1]:
        tree = tree[key]
    if delete and isinstance(tree, dict):
        del tree[path[-1]]
    else:
        tree[path[-1]] = value


def _outcome(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """'loaded' (exactly as written, and usable) or 'refused' (one-line CheckpointError)."""
    from charrnn.cli import _load_for_inference
    from charrnn.sampler import SampleOptions, Sampler
    from charrnn.schema import check
    from charrnn.trainer import TrainState

    class Log:
        def warn(self, msg: str) -> None:
            raise AssertionError(f"unexpected warning: {msg}")

    try:
        ck = Store(path.parent, schema=check).load(path)
    except CheckpointError as e:
        assert "\n" not in str(e) and str(e).startswith(f"{path}: "), str(e)
        return "refused"
    # loaded: it must be exactly what was written ...
    assert ck.meta == meta
    assert list(ck.arrays) == list(arrays)
    for key, a in arrays.items():
        b = ck.arrays[key]
        assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes(), key
    # ... and every consumer takes it without an error or a numeric warning
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        TrainState.from_checkpoint(ck.arrays, ck.meta)
        _, model, vocab = _load_for_inference(path.parent, str(path), None, Log())
        sampler = Sampler(model, vocab)
        sampler.lines(2, 20, SampleOptions(1.0), np.random.default_rng(0))
    return "loaded"


def _save(tmp: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path | None:
    try:
        return Store(tmp).save("fuzz", STEP, arrays, meta, keep=None)
    except (CharrnnError, ValueError):
        return None  # the store refuses to write it at all: nothing to load


@FUZZ
@given(data=st.data())
def test_mutated_metadata_loads_as_written_or_is_refused(data: st.DataObject) -> None:
    meta = copy.deepcopy(META)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(meta)
        if not paths:
            break
        where = data.draw(st.sampled_from(paths))
        _set(meta, where, data.draw(json_value), data.draw(st.booleans()))
    with tempfile.TemporaryDirectory() as tmp:
        path = _save(Path(tmp), ARRAYS, meta)
        outcome = "unsaved" if path is None else _outcome(path, ARRAYS, meta)
    COUNTS[f"meta {outcome}"] += 1


dtypes = st.sampled_from(
    ["float32", "float64", "float16", "int8", "int64", "uint8", "uint64", "bool", "complex64"]
)


@st.composite
def replacement(draw: st.DrawFn, like: np.ndarray) -> np.ndarray:
    kind = draw(st.sampled_from(["dtype", "shape", "values", "scalar", "huge"]))
    if kind == "dtype":
        return like.astype(draw(dtypes))
    if kind == "shape":
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        return np.zeros(shape, dtype=like.dtype)
    if kind == "scalar":
        return np.array(draw(st.floats(-10, 10)), dtype=like.dtype)
    out = like.copy()
    if out.size:
        flat = out.reshape(-1)
        i = draw(st.integers(0, flat.size - 1))
        if kind == "huge" and like.dtype.kind == "f":
            flat[i] = draw(st.sampled_from([3e38, -1e30, 1e16, 65504.0]))
        elif like.dtype.kind == "b":
            flat[i] = not flat[i]
        elif like.dtype.kind in "iu":
            flat[i] = draw(st.sampled_from([-1, 0, 1, 2**31, np.iinfo(like.dtype).max]))
        else:
            flat[i] = draw(st.floats(-1e3, 1e3, width=like.dtype.itemsize * 8))
    return out


@FUZZ
@given(data=st.data())
def test_arrays_of_other_dtypes_and_shapes_load_as_written_or_are_refused(
    data: st.DataObject,
) -> None:
    arrays = dict(ARRAYS)
    action = data.draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    key = data.draw(st.sampled_from(sorted(arrays)))
    if action == "replace":
        arrays[key] = data.draw(replacement(arrays[key]))
    elif action == "drop":
        del arrays[key]
    else:
        arrays[data.draw(st.sampled_from(["param.extra", "opt.w", "hist.more", "x"]))] = np.ones(3)
    with tempfile.TemporaryDirectory() as tmp:
        path = _save(Path(tmp), arrays, META)
        outcome = "unsaved" if path is None else _outcome(path, arrays, META)
    COUNTS[f"arrays {outcome}"] += 1


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
            st.integers(0, len(RAW) - 1),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_damaged_bytes_load_as_written_or_are_refused(edits: list[tuple[str, int, int]]) -> None:
    raw = bytearray(RAW)
    for op, at, value in edits:
        if not raw:
            break
        at %= len(raw)
        if op == "flip":
            raw[at] ^= 1 << (value % 8)
        elif op == "set":
            raw[at] = value
        elif op == "truncate":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = bytes([value])
        else:
            del raw[at]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt-000000004.npz"
        path.write_bytes(bytes(raw))
        outcome = _outcome(path, ARRAYS, META)
    COUNTS[f"bytes {outcome}"] += 1


def test_an_array_of_complex_numbers_is_refused_before_anything_casts_it() -> None:
    """A complex array is refused by its dtype; nothing casts it to real on the way
    (which NumPy would do with a ComplexWarning on stderr)."""
    assert "opt.m" in ARRAYS  # Adam's first moment
    arrays = {k: (a.astype(np.complex64) if k == "opt.m" else a) for k, a in ARRAYS.items()}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        path = _save(Path(tmp), arrays, META)
        assert path is not None and _outcome(path, arrays, META) == "refused"
    assert not seen, [str(w.message) for w in seen]


def test_the_fuzzed_checkpoint_itself_loads() -> None:
    """The fuzz starts from a checkpoint that passes, so refusals mean something."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt-000000004.npz"
        path.write_bytes(RAW)
        assert _outcome(path, ARRAYS, META) == "loaded"
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(npz[META_KEY].tobytes().decode())
    assert header["format_version"] == 2 and len(header["arrays"]) == len(ARRAYS)


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    if COUNTS:
        print("\nfuzz outcomes:", json.dumps(dict(sorted(COUNTS.items()))))


@pytest.mark.parametrize("where", [("model", "layers"), ("train", "batch_size")])
def test_a_huge_count_in_the_metadata_is_refused_without_allocating_it(where, tmp_path):
    """A layer count or batch size of 2**40 (the fuzz above drew such values) is refused
    before anything of that size exists: checked in a child whose address space is capped
    at 3 GiB, where the old checks raised MemoryError or grew until the OOM killer came."""
    import resource
    import subprocess
    import sys

    meta = copy.deepcopy(META)
    _set(meta, where, 2**40, False)
    path = _save(tmp_path, ARRAYS, meta)
    assert path is not None
    code = (
        "import sys\n"
        "from charrnn.errors import CheckpointError\n"
        "from charrnn.schema import check\n"
        "from charrnn.store import Store\n"
        f"p = {str(path)!r}\n"
        "try:\n"
        "    Store(p.rsplit('/', 2)[0], schema=check).load(p)\n"
        "except CheckpointError as e:\n"
        "    print('refused:', e)\n"
    )

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=cap, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("refused:"), out.stderr[-500:]
