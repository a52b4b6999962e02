"""Checkpoint store: round trip, validation, crash safety, retention, lock, resolve."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn import store as store_mod
from charrnn.errors import (
    CharrnnError,
    CheckpointError,
    ConfigError,
    InputMissingError,
    LockedError,
    StoreIOError,
)
from charrnn.store import (
    ENV_VAR,
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    Store,
    default_root,
    validate_arrays,
)

REPO = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).resolve().parent / "_store_killer.py"
TMP_RE = re.compile(r"\.(ckpt-\d+|best)\.npz\.tmp-\d+-[0-9a-f]+")


def params(step: int = 1) -> dict[str, np.ndarray]:
    return {
        "l0.W": np.full((3, 4), step, dtype=np.float64),  # (E, H)
        "b": np.arange(4, dtype=np.float32) + step,  # (H,)
        "ids": np.arange(5, dtype=np.int64),
    }


def write_raw(path: Path, header: object | None, arrays: dict[str, np.ndarray], **kw) -> Path:
    """A hand-made .npz, for files the store itself would never write."""
    members = dict(arrays)
    if isinstance(header, dict) and header.get("format_version") == 2 and "arrays" not in header:
        listed = [[k, np.asarray(a).dtype.str, list(np.shape(a))] for k, a in arrays.items()]
        header = {**header, "arrays": listed}  # format 2 lists its arrays
    if header is not None:
        text = header if isinstance(header, bytes) else json.dumps(header).encode()
        members[META_KEY] = np.frombuffer(text, dtype=np.uint8)
    np.savez(path, **members, **kw)
    return path


def good_header(**changes: object) -> dict:
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run": "r",
        "step": 1,
        "saved_at": "2025-01-01T00:00:00+00:00",
        "meta": {},
    }
    header.update(changes)
    return header


def spawn(*args: str) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [sys.executable, str(HELPER), *args], stdout=subprocess.PIPE, text=True, env=env
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# ----------------------------------------------------------------------------- round trip

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
dtypes = st.sampled_from(
    ["float32", "float64", "float16", "int8", "int32", "int64", "uint8", "uint16", "uint64", "bool"]
)


@st.composite
def array_strategy(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=elements))


array_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=10,
).filter(lambda name: name != META_KEY)  # reserved: refusing it is tested on its own


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrays=st.dictionaries(array_names, array_strategy(), max_size=5),
    meta=st.dictionaries(st.text(max_size=8), json_value, max_size=5),
    note=st.text(),
    step=st.integers(min_value=0, max_value=10**12),
)
def test_save_load_round_trip(arrays: dict, meta: dict, note: str, step: int) -> None:
    meta = {**meta, "note": note, "multi": "line one\nline two\r\nünïcødé ✓ 🦕"}
    with tempfile.TemporaryDirectory() as tmp:
        st_ = Store(tmp)
        path = st_.save("run-1", step, arrays, meta)
        ck = st_.load(path)
    assert (ck.run, ck.step, ck.path) == ("run-1", step, path)
    assert ck.meta == meta
    assert list(ck.arrays) == list(arrays)  # saved order kept
    for key, a in arrays.items():
        b = ck.arrays[key]
        assert b.dtype == a.dtype and b.shape == a.shape
        assert b.tobytes() == a.tobytes()  # bit-exact, -0.0 included


def test_round_trip_keeps_names_that_trip_np_savez(store: Store) -> None:
    # np.savez(file, allow_pickle=..., **kw) would swallow these names
    arrays = {"file": np.zeros(2), "allow_pickle": np.ones(3), "args": np.arange(2)}
    ck = store.load(store.save("r", 1, arrays, {}))
    assert set(ck.arrays) == set(arrays)
    np.testing.assert_array_equal(ck.arrays["allow_pickle"], np.ones(3))


def test_file_is_a_plain_npz_with_a_json_header(store: Store) -> None:
    path = store.save("r", 7, params(), {"vocab": "abc"})
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz[META_KEY].tobytes().decode())
        np.testing.assert_array_equal(npz["l0.W"], params()["l0.W"])
    assert header["format"] == FORMAT and header["format_version"] == FORMAT_VERSION
    assert (header["run"], header["step"], header["meta"]) == ("r", 7, {"vocab": "abc"})
    assert path.name == "ckpt-000000007.npz"


def test_numpy_scalars_in_meta_become_json(store: Store) -> None:
    ck = store.load(store.save("r", 1, {}, {"loss": np.float32(1.5), "n": np.int64(3)}))
    assert ck.meta == {"loss": 1.5, "n": 3}


# ----------------------------------------------------------------------------- validation


def assert_bad(store: Store, path: Path, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        store.load(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    for fragment in fragments:
        assert fragment in msg
    return info.value


def test_truncated_files_are_rejected(store: Store, tmp_path: Path) -> None:
    good = store.save("r", 1, {"w": np.arange(20_000, dtype=np.float64)}, {"a": 1})
    data = good.read_bytes()
    for cut in [0, 1, 3, 30, 200, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1]:
        bad = tmp_path / f"cut-{cut}.npz"
        bad.write_bytes(data[:cut])
        assert_bad(store, bad)


def test_flipped_byte_in_array_data_fails_crc(store: Store, tmp_path: Path) -> None:
    good = store.save("r", 1, {"w": np.arange(20_000, dtype=np.float64)}, {})
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside 'w', far from any header
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    assert_bad(store, bad, "'w'")


def test_garbage_is_rejected(store: Store, tmp_path: Path) -> None:
    for i, blob in enumerate([b"hello world", os.urandom(4096), b"PK\x03\x04" + os.urandom(500)]):
        bad = tmp_path / f"garbage-{i}.npz"
        bad.write_bytes(blob)
        assert_bad(store, bad)


def test_plain_npz_without_meta_is_rejected(store: Store, tmp_path: Path) -> None:
    bad = write_raw(tmp_path / "plain.npz", None, {"a": np.zeros(3)})
    assert_bad(store, bad, "not a charrnn checkpoint")


def test_meta_that_is_not_json_is_rejected(store: Store, tmp_path: Path) -> None:
    bad = write_raw(tmp_path / "bad-meta.npz", b"\xff{not json", {"a": np.zeros(3)})
    assert_bad(store, bad, "JSON")


def test_foreign_format_is_rejected(store: Store, tmp_path: Path) -> None:
    bad = write_raw(tmp_path / "foreign.npz", good_header(format="other-tool"), {})
    assert_bad(store, bad, "not a charrnn checkpoint")


def test_newer_format_version_asks_for_upgrade(store: Store, tmp_path: Path) -> None:
    bad = write_raw(tmp_path / "newer.npz", good_header(format_version=FORMAT_VERSION + 1), {})
    assert_bad(
        store, bad, f"written by a newer charrnn (format {FORMAT_VERSION + 1}); upgrade charrnn"
    )


def test_nan_inside_is_rejected(store: Store, tmp_path: Path) -> None:
    w = np.ones((3, 4))
    w[1, 2] = np.nan
    bad = write_raw(tmp_path / "nan.npz", good_header(), {"l0.W": w, "ok": np.ones(2)})
    assert_bad(store, bad, "contains NaN/inf in 'l0.W'")
    inf = write_raw(tmp_path / "inf.npz", good_header(), {"b": np.array([np.inf], np.float32)})
    assert_bad(store, inf, "contains NaN/inf in 'b'")


def test_object_array_is_never_unpickled(store: Store, tmp_path: Path, monkeypatch) -> None:
    bad = write_raw(
        tmp_path / "obj.npz",
        good_header(),
        {"o": np.array([{"x": 1}, None], dtype=object)},
        allow_pickle=True,
    )
    import pickle

    def no_pickle(*a: object, **k: object) -> None:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    assert_bad(store, bad, "array 'o' has object dtype")


def test_missing_file_and_directory(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputMissingError, match="no checkpoint file at"):
        store.load(tmp_path / "nope.npz")
    with pytest.raises(InputMissingError, match="directory"):
        store.load(tmp_path)


def test_validate_arrays_names_file_and_mismatch(tmp_path: Path) -> None:
    arrays = {"Wya": np.zeros((65, 128)), "by": np.zeros(65, dtype=np.float32)}
    validate_arrays("x.npz", arrays, {"Wya": ((65, 128), "float64")})
    with pytest.raises(CheckpointError) as info:
        validate_arrays(
            "x.npz",
            arrays,
            {"Wya": ((27, 128), "float64"), "by": ((65,), "float64"), "h0": ((2,), "f8")},
        )
    msg = str(info.value)
    assert msg.startswith("x.npz: ")
    assert "'Wya' has shape (65, 128), expected (27, 128)" in msg
    assert "'by' has dtype float32, expected float64" in msg
    assert "missing array 'h0'" in msg


# ----------------------------------------------------------------------------- saving


def test_save_refuses_nan_and_writes_nothing(store: Store) -> None:
    bad = params()
    bad["b"][0] = np.nan
    with pytest.raises(CheckpointError, match="'b'"):
        store.save("fresh", 1, bad, {})
    assert not store.run_dir("fresh").exists()

    first = store.save("r", 1, params(1), {})
    with pytest.raises(CheckpointError, match="NaN/inf"):
        store.save("r", 2, bad, {})
    assert sorted(os.listdir(store.run_dir("r"))) == [first.name]


def test_save_refuses_object_arrays_and_non_json_meta(store: Store) -> None:
    with pytest.raises(CheckpointError, match="object"):
        store.save("r", 1, {"o": np.array([None, 1], dtype=object)}, {})
    with pytest.raises(CheckpointError, match="strict JSON"):
        store.save("r", 1, params(), {"best_loss": float("inf")})
    with pytest.raises(CheckpointError, match="strict JSON"):
        store.save("r", 1, params(), {"when": object()})
    with pytest.raises(ValueError, match="reserved"):
        store.save("r", 1, {META_KEY: np.zeros(1)}, {})
    assert not store.run_dir("r").exists()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "a b", "x:best", "é"])
def test_invalid_run_names(store: Store, name: str) -> None:
    with pytest.raises(CheckpointError, match="invalid run name"):
        store.run_dir(name)


def test_disk_full_leaves_earlier_checkpoints_and_no_temp(store: Store, monkeypatch) -> None:
    first = store.save("r", 1, params(1), {})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "fsync", full)
    with pytest.raises(StoreIOError) as info:
        store.save("r", 2, params(2), {})
    monkeypatch.undo()
    msg = str(info.value)
    assert "cannot write checkpoint to" in msg and "No space left on device" in msg
    assert "ckpt-000000002.npz" in msg
    assert sorted(os.listdir(store.run_dir("r"))) == [first.name]
    assert store.latest("r").step == 1


def test_store_root_that_is_a_file_is_a_store_io_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreIOError, match="cannot create run directory"):
        Store(tmp_path / "afile").save("r", 1, params(), {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_run_dir_is_a_store_io_error(store: Store) -> None:
    store.save("r", 1, params(1), {})
    d = store.run_dir("r")
    d.chmod(0o500)
    try:
        with pytest.raises(StoreIOError, match="Permission denied"):
            store.save("r", 2, params(2), {})
    finally:
        d.chmod(0o700)


def test_retention_keeps_newest_k_plus_best(store: Store) -> None:
    for step in range(1, 8):
        store.save("r", step, params(step), {"step": step}, best=step == 2, keep=3)
    assert [p.name for p in store.checkpoints("r")] == [
        "ckpt-000000005.npz",
        "ckpt-000000006.npz",
        "ckpt-000000007.npz",
    ]
    best = store.best("r")
    assert best is not None and best.step == 2 and best.meta == {"step": 2}
    np.testing.assert_array_equal(best.arrays["l0.W"], params(2)["l0.W"])
    assert store.resolve("r:best").step == 2

    # a newer best replaces it atomically
    store.save("r", 8, params(8), {}, best=True, keep=3)
    assert store.best("r").step == 8


def test_keep_none_keeps_all_and_old_step_save_survives(store: Store) -> None:
    for step in (10, 20, 30):
        store.save("r", step, params(), {}, keep=None)
    assert len(store.checkpoints("r")) == 3
    # resuming from an older step (the newer ones unreadable) must not prune the file it
    # just wrote, nor judge the newer ones: the older ones go
    path = store.save("r", 25, params(), {}, keep=1)
    assert path.exists()
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000025.npz", "ckpt-000000030.npz"]


def test_best_falls_back_to_copy_without_hard_links(store: Store, monkeypatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(store_mod.os, "link", no_links)
    path = store.save("r", 1, params(1), {}, best=True)
    best_path = store.run_dir("r") / "best.npz"
    assert best_path.read_bytes() == path.read_bytes()
    assert best_path.stat().st_ino != path.stat().st_ino
    assert store.best("r").step == 1


def test_best_is_none_without_best(store: Store) -> None:
    store.save("r", 1, params(), {})
    assert store.best("r") is None


# ----------------------------------------------------------------------------- latest / runs


def test_latest_skips_corrupt_newest_with_warning(store: Store) -> None:
    for step in (1, 2, 3):
        store.save("r", step, params(step), {})
    newest = store.checkpoints("r")[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    warnings: list[str] = []
    ck = store.latest("r", on_warning=warnings.append)
    assert ck.step == 2
    assert len(warnings) == 1
    assert warnings[0].startswith(f"skipping corrupt checkpoint {newest}: ")
    assert warnings[0].endswith(f"; using {ck.path}")


def test_latest_when_all_corrupt_or_none(store: Store) -> None:
    with pytest.raises(InputMissingError, match="no checkpoints in run 'r'"):
        store.latest("r")
    for step in (1, 2):
        store.save("r", step, params(step), {})
    for p in store.checkpoints("r"):
        p.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="all 2 checkpoint"):
        store.latest("r")


def test_latest_uses_intact_best_copy_when_all_ckpts_are_corrupt(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(
        store_mod.os, "link", lambda s, d: (_ for _ in ()).throw(OSError(errno.EXDEV, "x"))
    )
    store.save("r", 1, params(1), {}, best=True)
    store.checkpoints("r")[0].write_bytes(b"junk")
    warnings: list[str] = []
    assert store.latest("r", warnings.append).step == 1
    assert len(warnings) == 1 and "best.npz" in warnings[0]


def test_latest_skips_file_pruned_between_listing_and_reading(store: Store, monkeypatch) -> None:
    for step in (1, 2):
        store.save("r", step, params(step), {})
    real = Store._steps
    ghost = store.run_dir("r") / "ckpt-000000099.npz"  # listed, then "pruned"

    def racing(d: Path) -> list[tuple[int, Path]]:
        return [*real(d), (99, ghost)]

    monkeypatch.setattr(Store, "_steps", staticmethod(racing))
    warnings: list[str] = []
    assert store.latest("r", warnings.append).step == 2
    assert warnings == []


def test_temp_files_are_ignored_and_cleaned(store: Store) -> None:
    store.save("r", 1, params(1), {})
    d = store.run_dir("r")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    torn = d / f".ckpt-000000002.npz.tmp-{dead_pid}-deadbeef"
    torn.write_bytes(b"PK\x03\x04 half a file")
    live = d / f".ckpt-000000003.npz.tmp-{os.getppid()}-cafef00d"  # a live writer's file
    live.write_bytes(b"PK")
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000001.npz"]
    assert store.latest("r").step == 1
    with store.lock("r"):
        assert store.clean_leftovers("r") == [torn]
    assert not torn.exists() and live.exists()


def test_runs_and_latest_run_ignore_strays(store: Store) -> None:
    assert store.runs() == [] and store.latest_run() is None
    store.save("old", 1, params(), {})
    store.save("new", 4, params(), {})
    store.save("new", 5, params(), {}, best=True)
    os.utime(store.checkpoints("old")[0], (1_000_000, 1_000_000))
    (store.root / "empty").mkdir()
    (store.root / "stray.txt").write_text("x")
    (store.root / ".hidden").mkdir()
    (store.run_dir("empty") / "notes.npz").write_text("x")
    infos = store.runs()
    assert [r.name for r in infos] == ["old", "new"]
    assert (infos[1].latest_step, infos[1].n_checkpoints, infos[1].has_best) == (5, 2, True)
    assert infos[0].updated == 1_000_000
    assert store.latest_run() == "new"


# ----------------------------------------------------------------------------- resolve


def test_resolve(store: Store, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(InputMissingError) as info:
        store.resolve(None)
    assert (
        str(info.value) == f"no checkpoints in {store.root}; train one with: charrnn train CORPUS"
    )
    with pytest.raises(InputMissingError, match="no runs yet"):
        store.resolve("dinos")

    store.save("alpha", 1, params(1), {}, best=True)
    store.save("alpha", 2, params(2), {})
    store.save("beta", 9, params(9), {})
    os.utime(store.checkpoints("alpha")[-1], (1_000_000, 1_000_000))

    assert (store.resolve(None).run, store.resolve(None).step) == ("beta", 9)
    assert store.resolve("alpha").step == 2
    assert store.resolve("alpha:latest").step == 2
    assert store.resolve("alpha:best").step == 1
    assert store.resolve("alpha:1").step == 1
    path = store.checkpoints("alpha")[0]
    assert store.resolve(str(path)).path == path

    with pytest.raises(InputMissingError) as info:
        store.resolve("dinos")
    assert str(info.value) == f"no run named 'dinos' in {store.root}; runs: alpha, beta"
    with pytest.raises(InputMissingError, match="no best checkpoint"):
        store.resolve("beta:best")
    with pytest.raises(InputMissingError, match=r"no checkpoint at step 3; steps: 1 \(best\), 2$"):
        store.resolve("alpha:3")
    with pytest.raises(ConfigError, match="unknown checkpoint selector"):  # a usage error
        store.resolve("alpha:worst")
    with pytest.raises(InputMissingError, match="no checkpoint file at"):
        store.resolve(str(tmp_path / "missing.npz"))
    with pytest.raises(InputMissingError, match="runs: alpha, beta"):
        store.resolve("bad name")

    # an existing file wins over a run of the same name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alpha").write_bytes(store.checkpoints("beta")[0].read_bytes())
    assert store.resolve("alpha").run == "beta"


def test_resolve_hint_shows_relative_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputMissingError) as info:
        Store("checkpoints").resolve(None)
    assert (
        str(info.value) == "no checkpoints in ./checkpoints; train one with: charrnn train CORPUS"
    )


def test_env_var_moves_default_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_root() == Path("checkpoints")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    monkeypatch.setenv(ENV_VAR, "")
    assert default_root() == Path("checkpoints")


def test_errors_are_charrnn_errors_with_exit_codes() -> None:
    assert issubclass(CheckpointError, CharrnnError) and CheckpointError.exit_code == 65
    assert LockedError.exit_code == 75 and StoreIOError.exit_code == 74


# ----------------------------------------------------------------------------- lock


def test_lock_held_by_another_process_fails_fast(store: Store) -> None:
    holder = spawn("hold", str(store.root), "dinos", "30")
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(LockedError) as info, store.lock("dinos"):
            pass
        assert time.monotonic() - t0 < 1.0
        assert info.value.pid == holder.pid
        assert str(info.value) == (
            f"run 'dinos' is locked by pid {holder.pid} (another charrnn train); "
            "wait for it or pass --wait"
        )
        t0 = time.monotonic()
        still = f"still locked by pid {holder.pid}"
        with pytest.raises(LockedError, match=still), store.lock("dinos", wait=0.3):
            pass
        assert time.monotonic() - t0 >= 0.3
    finally:
        holder.kill()
        holder.wait()


def test_lock_wait_true_gets_it_after_holder_exits(store: Store) -> None:
    holder = spawn("hold", str(store.root), "dinos", "0.5")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError), store.lock("dinos"):
            pass
        with store.lock("dinos", wait=True):
            assert holder.wait(timeout=5) == 0
            assert (store.run_dir("dinos") / "lock").read_text().strip() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()


def test_sigkilled_holder_leaves_no_stale_lock(store: Store) -> None:
    holder = spawn("hold", str(store.root), "dinos", "30")
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with store.lock("dinos"):  # no wait: a dead holder's flock is gone
        pass
    assert (store.run_dir("dinos") / "lock").exists()  # kept on purpose, see Store.lock


def test_lock_is_not_reentrant_and_is_released(store: Store) -> None:
    mine = f"pid {os.getpid()}"
    with store.lock("r"), pytest.raises(LockedError, match=mine), store.lock("r"):
        pass
    with store.lock("r"):
        pass


def test_deleting_the_lock_file_does_not_let_a_second_writer_in(store: Store) -> None:
    holder = spawn("hold", str(store.root), "dinos", "30")
    try:
        assert holder.stdout.readline().strip() == "locked"
        (store.run_dir("dinos") / "lock").unlink()  # a careless rm while training
        with pytest.raises(LockedError, match="is locked by another process"), store.lock("dinos"):
            pass
        assert not (store.run_dir("dinos") / "lock").exists()  # nothing written meanwhile
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "directory"])
def test_a_lock_that_is_not_charrnns_own_file_is_refused_untouched(
    store: Store, tmp_path: Path, kind: str
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    lock = store.run_dir("r") / "lock"
    lock.parent.mkdir(parents=True)
    if kind == "symlink":
        lock.symlink_to(precious)
        msg = "is a symbolic link, not charrnn's lock file; remove it"
    elif kind == "hardlink":
        os.link(precious, lock)
        msg = "has other hard links: it is not charrnn's lock file"
    elif kind == "fifo":
        os.mkfifo(lock)
        msg = "is not a regular file: it is not charrnn's lock file"
    else:
        lock.mkdir()
        msg = "cannot open lock file"
    with pytest.raises(StoreIOError, match=msg), store.lock("r"):
        pytest.fail("the lock was taken")
    assert precious.read_text() == "keep me\n"
    with store.lock("r2"):  # and the store still works for a clean run
        pass


def test_a_run_directory_replaced_while_locked_stops_the_writer(store: Store) -> None:
    store.save("r", 1, params(1), {})
    with store.lock("r"):
        d = store.run_dir("r")
        d.rename(d.with_name("r.moved"))  # another program moves the run away ...
        d.mkdir()  # ... and a second charrnn could lock the new directory
        with pytest.raises(LockedError, match="was moved or replaced while this process held"):
            store.save("r", 2, params(2), {})
        assert list(d.iterdir()) == []  # nothing written into the new owner's directory
    with store.lock("r"):  # released, and a fresh lock sees the directory now at the path
        store.save("r", 2, params(2), {})


def test_full_disk_names_the_lock_file_and_leaves_no_empty_lock(store: Store, monkeypatch) -> None:
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "pwrite", full)
    lock = store.run_dir("r") / "lock"
    with pytest.raises(StoreIOError) as info, store.lock("r"):
        pass
    assert str(info.value) == f"cannot write lock file {lock}: No space left on device"
    assert not lock.exists()
    monkeypatch.undo()
    with store.lock("r"):
        assert lock.read_text() == f"{os.getpid()}\n"


# ----------------------------------------------------------------------------- crash safety


def test_sigkill_during_save_never_tears_a_checkpoint(store: Store) -> None:
    """SIGKILL a writer of ~4 MB checkpoints at random moments; after each kill every
    committed file loads with the right contents and latest() is the newest one."""
    rng = random.Random(1234)
    run = "crash"
    d = store.run_dir(run)
    kills, leftovers, last_step = 20, 0, 0
    excess = 0  # checkpoints beyond keep=3: each kill between commit and prune adds one
    for _ in range(kills):
        writer = spawn("save-loop", str(store.root), run, "4")
        line = writer.stdout.readline().split()
        assert line[0] == "ready", "writer could not take the lock (stale lock?)"
        assert int(line[1]) == last_step + 1  # resumes after the newest checkpoint
        time.sleep(rng.uniform(0.0, 0.08))
        writer.send_signal(signal.SIGKILL)
        writer.wait()

        committed = store.checkpoints(run)
        for path in committed:
            ck = store.load(path)  # raises on any torn or damaged file
            assert path.name == f"ckpt-{ck.step:09d}.npz"
            assert ck.meta == {"step": ck.step}
            assert np.all(ck.arrays["big"] == ck.step) and ck.arrays["step"] == ck.step
        if committed:
            warnings: list[str] = []
            latest = store.latest(run, warnings.append)
            assert warnings == [] and latest.path == committed[-1]
            assert len(committed) - 3 <= excess + 1  # at most one more per kill
            excess = max(0, len(committed) - 3)
            last_step = latest.step
        best = store.best(run)
        assert best is None or best.step % 5 == 0

        names = os.listdir(d)
        for name in names:
            assert (
                name in ("lock", "best.npz")
                or re.fullmatch(r"ckpt-\d{9}\.npz", name)
                or TMP_RE.fullmatch(name)
            ), name
        temps = sorted(d / n for n in names if TMP_RE.fullmatch(n))
        assert store.clean_leftovers(run) == temps
        assert not any(TMP_RE.fullmatch(n) for n in os.listdir(d))
        leftovers += len(temps)

    assert last_step >= 5  # the writers made real progress
    assert leftovers > 0  # some kills landed mid-write, so the test exercised that path


# ----------------------------------------------------------------------------- size limits


def test_a_deflated_member_is_refused_before_inflating(store: Store, tmp_path: Path) -> None:
    """A zip bomb: a few hundred kB on disk that inflate to 64 MB; refused by its header."""
    import zipfile

    path = store.save("r", 1, {"w": np.zeros(8)}, {})
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w") as dst:
        dst.writestr("__meta__.npy", src.read("__meta__.npy"))
        big = io.BytesIO()
        np.lib.format.write_array(big, np.zeros(8 << 20))  # (8M,) float64, 64 MB
        dst.writestr("w.npy", big.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    assert_bad(store, bomb, "member 'w.npy' is compressed or encrypted; charrnn never writes that")


def test_members_must_be_exactly_the_listed_arrays(store: Store, tmp_path: Path) -> None:
    import zipfile

    path = store.save("r", 1, {"a": np.ones(3), "b": np.arange(4)}, {})
    with zipfile.ZipFile(path) as src:
        parts = {i.filename: src.read(i) for i in src.infolist()}

    def rewrite(name: str, members: dict[str, bytes]) -> Path:
        out = tmp_path / name
        with zipfile.ZipFile(out, "w") as dst:
            for k, v in members.items():
                dst.writestr(k, v)
        return out

    dropped = rewrite("dropped.npz", {k: v for k, v in parts.items() if k != "b.npy"})
    assert_bad(store, dropped, "member 'b' is missing (1 of 2)")
    extra = io.BytesIO()
    np.lib.format.write_array(extra, np.ones(2))
    added = rewrite("added.npz", {**parts, "c.npy": extra.getvalue()})
    assert_bad(store, added, "unknown member 'c' (not in the list of arrays)")
    swapped = rewrite("swapped.npz", {**parts, "a.npy": parts["b.npy"]})
    assert_bad(store, swapped, "array 'a' is int64 (4,), but the metadata says float64 (3,)")


def test_a_huge_file_is_rejected_without_reading_it(store: Store, tmp_path: Path) -> None:
    """4 GiB (sparse) under a checkpoint's name, read by a process allowed 1.5 GiB."""
    run = store.run_dir("r")
    run.mkdir(parents=True)
    huge = run / "ckpt-000000001.npz"
    with open(huge, "wb") as f:
        f.write(b"PK\x03\x04" + b"\0" * 60)
        f.truncate(4 << 30)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))\n"
        "from charrnn.store import Store\n"
        "from charrnn.errors import CheckpointError\n"
        "try:\n"
        f"    Store({str(store.root)!r}).load({str(huge)!r})\n"
        "except CheckpointError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{huge}: truncated or damaged file"), r.stdout


def test_a_huge_npy_header_is_one_line(store: Store, tmp_path: Path) -> None:
    import zipfile

    path = store.save("r", 1, {"w": np.zeros(2)}, {})
    with zipfile.ZipFile(path) as src:
        meta = src.read("__meta__.npy")
    v1 = write_raw(tmp_path / "v1.npz", good_header(format_version=1), {"w": np.zeros(2)})
    with zipfile.ZipFile(v1) as src:
        meta_v1 = src.read("__meta__.npy")  # format 1: no list of sizes to check first
    text = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
    text = text + b" " * (20_000 - len(text) - 1) + b"\n"  # a 20 kB header
    npy = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(16)
    for header, message in [
        (meta, "member 'w' does not have the size its dtype and shape take"),
        (meta_v1, "array 'w' has a .npy header over 10000 bytes"),
    ]:
        bad = tmp_path / "header.npz"
        with zipfile.ZipFile(bad, "w") as dst:
            dst.writestr("__meta__.npy", header)
            dst.writestr("w.npy", npy)
        assert_bad(store, bad, message)


# ----------------------------------------------------------------------------- --fresh


def test_retired_checkpoints_stay_usable_until_the_next_save(store: Store) -> None:
    for step in (10, 20):
        store.save("r", step, params(step), {"step": step}, best=step == 10)
    with store.lock("r"):
        assert store.retire("r") == 2
    # as after a kill before the new run's first save: the old run is still the run
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]
    assert store.latest("r").step == 20
    assert store.resolve("r:best").step == 10 and store.resolve("r:10").step == 10
    assert [(r.name, r.latest_step) for r in store.runs()] == [("r", 20)]
    with store.lock("r"):
        store.save("r", 1, params(1), {"step": 1})  # the new run commits: the old one goes
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000001.npz"]
    assert store.latest("r").step == 1 and store.best("r") is None
    assert sorted(p.name for p in store.run_dir("r").iterdir()) == ["ckpt-000000001.npz", "lock"]
    with store.lock("r"):
        assert store.retire("r") == 1
        assert store.retire("r") == 0  # nothing left in the run directory to set aside
    assert store.latest("r").step == 1


def test_an_unconfirmed_save_prunes_nothing_until_settled(store: Store) -> None:
    for step in (10, 20):
        store.save("r", step, params(step), {}, keep=1)
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000020.npz"]
    with store.lock("r"):
        path = store.save("r", 21, params(21), {}, keep=1, confirmed=False)
        names = ["ckpt-000000020.npz", "ckpt-000000021.npz"]
        assert [p.name for p in store.checkpoints("r")] == names  # step 20 stays for it
        assert store.discard("r", path)  # found broken: the run is back at step 20
        assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000020.npz"]
        path = store.save("r", 21, params(21), {}, keep=1, confirmed=False)
        store.settle("r", 1, path)  # found sane: retention catches up
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000021.npz"]
    # --fresh: the old run's checkpoints stay until a save of the new run is confirmed
    with store.lock("r"):
        store.retire("r")
        path = store.save("r", 1, params(1), {}, keep=1, confirmed=False)
        assert (store.run_dir("r") / ".previous" / "ckpt-000000021.npz").is_file()
        store.discard("r", path)
        assert store.latest("r").step == 21  # the old run, from where it was set aside
        store.settle("r", 1, path)  # nothing of the new run's to vouch for: nothing goes
        assert store.latest("r").step == 21
        store.save("r", 1, params(1), {}, keep=1)
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000001.npz"]
    assert not (store.run_dir("r") / ".previous").exists()


def test_the_first_checkpoint_removes_a_record_beside_none(store: Store) -> None:
    with store.lock("r"):
        store.save_diverged("r", 6, params(6), {"attempt": 1})
        store.save("r", 10, params(10), {})  # a new attempt: the record is not its own
        assert not (store.run_dir("r") / "diverged.npz").exists()
        store.save_diverged("r", 16, params(16), {"attempt": 2})
        store.save("r", 20, params(20), {})  # the run's own record stays beside it
    assert store.resolve("r:diverged", allow_diverged=True).meta == {"attempt": 2}


def test_the_diverged_record_resolves_only_when_allowed(store: Store) -> None:
    store.save("r", 10, params(10), {})
    with store.lock("r"):
        path = store.save_diverged("r", 16, params(16), {})
    for spec in ("r:diverged", str(path)):
        with pytest.raises(ConfigError, match="record of a diverged run.*clip-stats r:diverged"):
            store.resolve(spec)
        assert store.resolve(spec, allow_diverged=True).step == 16
    with pytest.raises(ConfigError, match=r"RUN:STEP or a path"):
        store.resolve("r:bogus")


def test_forget_touches_nothing_once_the_directory_was_replaced(store: Store) -> None:
    cleared: list[Path] = []
    with store.lock("r"):
        d = store.run_dir("r")
        d.rename(d.with_name("r.moved"))  # another program moves the run away ...
        d.mkdir()  # ... and puts a directory of its own at the path
        (d / "notes.txt").write_text("mine\n")
        with pytest.raises(LockedError, match="was moved or replaced"):
            store.forget("r", cleared.append)
        assert cleared == [] and (d / "notes.txt").read_text() == "mine\n"
    with store.lock("r"):  # at the path now: the caller's clear runs, the rest stays
        assert not store.forget("r", cleared.append)
    assert cleared == [d] and (d / "notes.txt").is_file()


def test_retention_deletes_only_the_names_the_store_writes(store: Store, tmp_path: Path) -> None:
    d = store.run_dir("r")
    d.mkdir(parents=True)
    outside = tmp_path / "mine.npz"
    outside.write_bytes(b"not the store's")
    # files like checkpoints that checkpoint_name never writes, and a planted symlink
    foreign = ["ckpt-5.npz", "ckpt-0000000001.npz", "ckpt-\u0661\u0662\u0663\u0664\u0665.npz"]
    for name in foreign:
        (d / name).write_bytes(b"a user's file")
    (d / "ckpt-000000002.npz").symlink_to(outside)
    for step in (10, 20, 30):
        store.save("r", step, params(step), {}, keep=1)
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000030.npz"]
    for name in foreign:
        assert (d / name).read_bytes() == b"a user's file"
    assert (d / "ckpt-000000002.npz").is_symlink() and outside.read_bytes() == b"not the store's"
    # the names the store does write, beyond nine digits too, are its checkpoints
    for step in (999_999_999, 1_000_000_000):
        assert store_mod._CKPT_RE.fullmatch(store.checkpoint_name(step))
    store.save("r", 1_000_000_000, params(1), {}, keep=1)
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-1000000000.npz"]


def test_settle_never_deletes_the_checkpoint_vouched_for(store: Store) -> None:
    for step in (5, 10):
        store.save("r", step, params(step), {}, keep=None)
    broken = store.save("r", 20, params(20), {}, keep=None, confirmed=False)
    broken.write_bytes(broken.read_bytes()[:100])  # torn, or a user's file under the name
    resumed = store.latest("r", on_warning=lambda msg: None)
    assert resumed.step == 10
    with store.lock("r"):
        # the session's first sane loss vouches for step 10, not for the newest file
        store.settle("r", 1, resumed.path)
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]
    assert store.latest("r", on_warning=lambda msg: None).step == 10
    with store.lock("r"):
        store.settle("r", 1, store.run_dir("r") / "best.npz")  # not a checkpoint: nothing goes
        store.settle("r", 1, store.run_dir("r") / "ckpt-000000030.npz")  # gone: nothing goes
        assert len(store.checkpoints("r")) == 2
        path = store.save("r", 21, params(21), {}, keep=1, confirmed=False)
        store.settle("r", 1, path)  # the run's newest: retention as usual
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000021.npz"]


def test_the_header_records_whether_the_saver_vouched_for_the_weights(store: Store) -> None:
    with store.lock("r"):
        assert store.load(store.save("r", 1, params(1), {})).confirmed is True
        assert store.load(store.save("r", 2, params(2), {}, confirmed=False)).confirmed is False
        assert store.load(store.save_diverged("r", 3, params(3), {})).confirmed is None
    old = write_raw(
        store.run_dir("r") / "ckpt-000000004.npz",
        {"format": FORMAT, "format_version": 2, "run": "r", "step": 4, "meta": {}},
        params(4),
    )
    assert store.load(old).confirmed is None  # a file from before the record


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_planted_diverged_npz_is_never_moved_or_removed(
    store: Store, tmp_path: Path, kind: str
) -> None:
    precious = tmp_path / "precious.npz"
    precious.write_bytes(b"someone else's")
    d = store.run_dir("r")
    d.mkdir(parents=True)
    planted = d / "diverged.npz"

    def plant() -> None:
        if kind == "symlink":
            planted.symlink_to(precious)
        else:
            os.link(precious, planted)

    def intact() -> bool:
        same = planted.is_symlink() if kind == "symlink" else os.path.samefile(planted, precious)
        return same and precious.read_bytes() == b"someone else's"

    plant()
    warned: list[str] = []
    with store.lock("r"):
        store.save("r", 1, params(1), {}, on_warning=warned.append)  # the first checkpoint
        assert intact()
        assert warned and "not charrnn's" in warned[0]
        with pytest.raises(StoreIOError, match="not charrnn's"):
            store.save_diverged("r", 2, params(2), {})  # would replace it
        assert intact()
        assert store.retire("r") == 1  # --fresh sets the run's own files aside, not this
        assert intact()
        store.save("r", 1, params(1), {})  # deletes what was set aside
        assert intact()
        assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000001.npz"]
    # in .previous (put there by hand): the replaced run's own files go, this stays
    planted.unlink()
    (d / ".previous").mkdir()
    planted = d / ".previous" / "diverged.npz"
    plant()
    with store.lock("r"):
        # an earlier .previous is dropped first: what is not charrnn's stays, and says so
        with pytest.raises(StoreIOError, match="holds files charrnn did not write"):
            store.retire("r")
        assert intact()
        assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000001.npz"]


def test_a_run_with_only_its_diverged_record_is_not_called_missing(tmp_path):
    # a run that diverged before its first checkpoint keeps diverged.npz alone: sample and
    # clip-stats used to say "no run named 'd1' ...; runs: ..." as if it did not exist
    store = Store(tmp_path)
    store.save("alpha", 1, params(1), {})
    store.save_diverged("d1", 6, params(6), {})
    said = (
        "run 'd1' has no checkpoint (it diverged before its first; "
        "charrnn clip-stats d1:diverged shows what happened)"
    )
    for spec in ("d1", "d1:latest", "d1:best", "d1:6"):
        with pytest.raises(InputMissingError) as info:
            store.resolve(spec)
        assert str(info.value) == said, spec
    with pytest.raises(InputMissingError) as info:
        store.latest("d1")
    assert str(info.value) == said
    assert store.resolve("d1:diverged", allow_diverged=True).step == 6
    # a record that is not the store's (a symlink planted under the name) says nothing of it
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "diverged.npz").symlink_to(tmp_path / "d1" / "diverged.npz")
    with pytest.raises(InputMissingError) as info:
        store.resolve("d2")
    assert str(info.value) == f"no run named 'd2' in {store.root}; runs: alpha"


def test_run_step_finds_the_best_checkpoint_retention_let_go(tmp_path):
    # best.npz outlives retention: sample announces "its best checkpoint, step 7", and
    # RUN:7 used to be refused with "steps: 9, 10"
    store = Store(tmp_path)
    store.save("r", 7, params(7), {}, best=True)
    for step in (8, 9, 10):
        store.save("r", step, params(step), {}, keep=2)
    assert [p.name for p in store.checkpoints("r")] == ["ckpt-000000009.npz", "ckpt-000000010.npz"]
    got = store.resolve("r:7")
    assert got.step == 7 and got.path.name == "best.npz"
    np.testing.assert_array_equal(got.arrays["l0.W"], params(7)["l0.W"])
    assert store.resolve("r:9").path.name == "ckpt-000000009.npz"
    with pytest.raises(InputMissingError) as info:
        store.resolve("r:3")
    assert str(info.value) == "run 'r' has no checkpoint at step 3; steps: 7 (best), 9, 10"
    # best at a kept step: listed once, marked
    store.save("r", 11, params(11), {}, best=True, keep=2)
    with pytest.raises(InputMissingError) as info:
        store.resolve("r:7")
    assert str(info.value) == "run 'r' has no checkpoint at step 7; steps: 10, 11 (best)"
    # an unreadable best.npz is no step to offer, and no reason to fail otherwise
    (tmp_path / "r" / "best.npz").unlink()
    (tmp_path / "r" / "best.npz").write_bytes(b"not a zip")
    with pytest.raises(InputMissingError) as info:
        store.resolve("r:3")
    assert str(info.value) == "run 'r' has no checkpoint at step 3; steps: 10, 11"
