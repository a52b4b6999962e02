"""What a charrnn model checkpoint must hold, checked field by field on every read.

The store checks bytes (zip structure, crc, .npy headers, sizes, NaN/inf); this checks
meaning, so that a checkpoint either loads exactly as it was written or is refused
as corrupt everywhere (``Store(root, schema=check)``; ``latest`` then falls back to an
older checkpoint with a warning):

- configs: ModelConfig, OptimConfig, TrainConfig and the corpus options parse and pass
  their own validation; the vocabulary has exactly ``vocab_size`` characters
- parameters: exactly the arrays ``param_shapes(cfg)`` names, each of that shape and of
  the model's dtype, magnitudes below ``PARAM_LIMIT``
- the training state round-trips: ``TrainState.from_checkpoint(arrays, meta)`` then
  ``to_checkpoint()`` gives back the same array names, dtypes, shapes and values and
  the same meta (optimizer state against the parameters, hidden state against the
  batch size, history lengths, rng state, step); nothing else may be present except the
  corpus arrays the session adds
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from charrnn.errors import CharrnnError, CheckpointError
from charrnn.model import ModelConfig, param_shapes
from charrnn.reading import CorpusOptions
from charrnn.store import Checkpoint
from charrnn.tokenizer import Vocab
from charrnn.trainer import PARAM_LIMIT, TrainState

__all__ = ["PARAM_LIMIT", "check"]

# arrays the session adds beside the training state: name -> (dtype kind, ndim)
CORPUS_ARRAYS = {"corpus.line_hashes": ("iu", 1), "corpus.val_hashes": ("iu", 1)}
# config objects: fields added in a later version are filled with their defaults
CONFIGS = ("model", "optim", "train")
# meta the session adds beside the training state ("auto": autoconfig's choice and reason)
CORPUS_META = ("corpus", "vocab", "run", "charrnn", "auto")
# history members of checkpoints written before the bounded history (converted on load)
HISTORY_V1 = {
    *(f"hist.{k}" for k in ("step", "loss", "grad_norm", "scale", "value_frac", "lr")),
    *("hist.skipped", "hist.group_norms", "hist.loss.nonfinite", "hist.grad_norm.nonfinite"),
    *("val.step", "val.loss"),
}


def check(ck: Checkpoint) -> None:
    """Raise CheckpointError (one line, without the path) if ``ck`` is not a sound model
    checkpoint; return None if it loads exactly as written."""
    meta, arrays = ck.meta, ck.arrays
    cfg = _parse("model config", ModelConfig.from_json, meta.get("model"))
    vocab = _parse("vocabulary", Vocab.from_json, meta.get("vocab"))
    if vocab.size != cfg.vocab_size:
        raise CheckpointError(
            f"vocabulary has {vocab.size} characters, the model expects {cfg.vocab_size}"
        )
    corpus = meta.get("corpus")
    if corpus is not None:
        if not isinstance(corpus, dict):
            raise CheckpointError("corpus facts are not a JSON object")
        _parse("corpus options", CorpusOptions.from_json, corpus.get("options", {}))
        if not isinstance(corpus.get("is_lines", False), bool):
            raise CheckpointError("corpus facts are malformed: bad 'is_lines'")
    _check_ranges(meta)
    _check_params(cfg, arrays)
    for key, (kinds, ndim) in CORPUS_ARRAYS.items():
        arr = arrays.get(key)
        if arr is not None and (arr.dtype.kind not in kinds or arr.ndim != ndim):
            raise CheckpointError(f"array {key!r} is {arr.dtype} {arr.shape}")
    for key, stored in arrays.items():  # charrnn writes real numbers only: nothing is cast
        if stored.dtype.kind not in "biuf":
            raise CheckpointError(f"array {key!r} is {stored.dtype}: charrnn stores real numbers")
    _check_round_trip(ck)


def _check_ranges(meta: dict[str, Any]) -> None:
    """Numbers the training state takes as given: counts and seconds are never negative."""
    for key in ("step", "optimizer_t"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"metadata {key!r} is {value!r}, not a count")
    for key, required in (("elapsed", False), ("best_val", False)):
        value = meta.get(key)
        if value is None and not required:
            continue
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise CheckpointError(f"metadata {key!r} is {value!r}, not a non-negative number")


def _parse(what: str, parse: Any, value: Any) -> Any:
    if value is None:
        raise CheckpointError(f"metadata lacks the {what}")
    try:
        return parse(value)
    except CharrnnError as e:
        raise CheckpointError(f"{what} is malformed: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"{what} is malformed: {_short(e)}") from None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_params(cfg: ModelConfig, arrays: dict[str, np.ndarray]) -> None:
    """Shapes, dtype and magnitude of every parameter, before anything is allocated."""
    last = f"param.l{cfg.layers - 1}.Waa"  # before param_shapes lists every layer claimed
    if last not in arrays:
        raise CheckpointError(
            f"the model config says {cfg.layers} layers, and there is no {last!r}"
        )
    dtype = np.dtype(cfg.dtype)
    for name, shape in param_shapes(cfg).items():
        key = f"param.{name}"
        arr = arrays.get(key)
        if arr is None:
            raise CheckpointError(f"missing parameter {key!r}")
        if arr.shape != tuple(shape) or arr.dtype != dtype:
            raise CheckpointError(
                f"parameter {key!r} is {arr.dtype} {arr.shape}, the config says "
                f"{dtype} {tuple(shape)}"
            )
        if arr.size and float(np.abs(arr).max()) > PARAM_LIMIT:
            raise CheckpointError(
                f"parameter {key!r} holds values beyond {PARAM_LIMIT:g}: not a trained model"
            )


def _check_round_trip(ck: Checkpoint) -> None:
    """The training state must come back exactly: every array and meta field of it."""
    try:
        state = TrainState.from_checkpoint(ck.arrays, ck.meta)
        arrays, meta = state.to_checkpoint()
    except CheckpointError as e:
        raise CheckpointError(f"training state is malformed: {e}") from None
    except Exception as e:  # any failure to parse stored data means the data is bad
        raise CheckpointError(f"training state is malformed: {_short(e)}") from None
    if "hist.step" in ck.arrays and "hist.format" not in ck.arrays:
        # an old full history is converted, not copied: its own members are checked
        # by the conversion; only the names are fixed here
        old = {k for k in ck.arrays if k.startswith(("hist.", "val."))}
        if old != HISTORY_V1:
            raise CheckpointError(f"history members {sorted(old ^ HISTORY_V1)[:3]} are wrong")
        arrays = {k: v for k, v in arrays.items() if not k.startswith(("hist.", "val."))}
        arrays.update({k: ck.arrays[k] for k in old})
    # the shape, not an array of it: a batch size the file made huge allocates nothing
    want_hidden = state.model.state_shape(state.train_cfg.batch_size)
    if state.hidden.shape != want_hidden:
        raise CheckpointError(
            f"array 'train.hidden' is {state.hidden.shape}, expected {want_hidden} "
            f"for batch size {state.train_cfg.batch_size}"
        )
    for key, want in arrays.items():
        got = ck.arrays.get(key)
        if got is None:
            raise CheckpointError(f"missing array {key!r}")
        want = np.asarray(want)
        if got.dtype != want.dtype or got.shape != want.shape:
            raise CheckpointError(
                f"array {key!r} is {got.dtype} {got.shape}, expected {want.dtype} {want.shape}"
            )
        if not np.array_equal(got, want):
            raise CheckpointError(f"array {key!r} does not load back as stored")
    extra = [k for k in ck.arrays if k not in arrays and k not in CORPUS_ARRAYS]
    if extra:
        raise CheckpointError(f"unknown array {extra[0]!r}")
    for key, stored in meta.items():
        loaded = ck.meta.get(key)
        if key in CONFIGS and isinstance(loaded, dict) and isinstance(stored, dict):
            # a field added since the file was written takes its default: compare the rest
            stored = {k: v for k, v in stored.items() if k in loaded}
            loaded = {k: v for k, v in loaded.items() if k in stored}
        if not _same_json(loaded, stored):
            raise CheckpointError(f"metadata {key!r} does not load back as stored")
    extra = [k for k in ck.meta if k not in meta and k not in CORPUS_META]
    if extra:
        raise CheckpointError(f"unknown metadata {extra[0]!r}")
    if state.step != ck.step:
        raise CheckpointError(f"step {state.step} in the training state, {ck.step} in the file")


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values (1 == 1.0 as JSON numbers are, but True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
