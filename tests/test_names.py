"""Names mode: each line one example from the sampler's start state.

* a padded, masked batch of lines has the loss and gradients of the sum over
  its lines run one at a time (float64), and a finite-difference check of the
  masked loss;
* the validation split is deterministic, disjoint and independent of the
  training seed;
* training and sampling start from the same state (zero state fed the newline);
* the trainer's names-mode validation equals `score --per-line` on those names.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from charrnn.batches import LineBatches, line_spans, split_lines
from charrnn.errors import CorpusError
from charrnn.model import CharRNN, ModelConfig, init_params
from charrnn.optim import OptimConfig
from charrnn.sampler import Sampler, is_known
from charrnn.scoring import score_lines
from charrnn.tokenizer import Vocab
from charrnn.trainer import EvalStats, TrainConfig, TrainState, evaluate, train

DINOS = Path(__file__).resolve().parent.parent / "data" / "dinos.txt"
NAMES = ["ann", "bo", "carla", "di", "eve", "fitzgerald", "ann", "gus", "", "hal", "io", "jo"]


def _corpus(lines=NAMES):
    text = "\n".join(lines) + "\n"
    vocab = Vocab.from_text(text)
    return text, vocab, vocab.encode(text)


def _model(vocab: Vocab, cell: str = "lstm", seed: int = 0, layers: int = 1) -> CharRNN:
    cfg = ModelConfig(vocab_size=vocab.size, cell=cell, hidden=5, layers=layers, dtype="float64")
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    params.flat[...] = rng.uniform(-0.6, 0.6, params.flat.shape)
    return CharRNN(cfg, params)


def test_line_spans_cover_every_line():
    text, vocab, ids = _corpus()
    starts, lengths = line_spans(ids, vocab.eos_id)
    got = [vocab.decode(ids[s : s + n]) for s, n in zip(starts, lengths, strict=True)]
    assert got == NAMES
    # a last line without a newline counts
    ids2 = vocab.encode("ab\ncd")
    s2, n2 = line_spans(ids2, vocab.eos_id)
    assert s2.tolist() == [0, 3] and n2.tolist() == [2, 2]
    assert [len(a) for a in line_spans(ids[:0], vocab.eos_id)] == [0, 0]


def _lines_of(batches: LineBatches, vocab: Vocab, k: int) -> list[str]:
    x, y, mask = batches.batch(k)
    out = []
    for b in range(x.shape[0]):
        n = int(mask[b].sum())
        assert x[b, 0] == vocab.eos_id  # every line starts from the newline
        assert (x[b, 1:n] == y[b, : n - 1]).all()  # targets are the inputs shifted by one
        assert y[b, n - 1] == vocab.eos_id  # ... and end with the newline
        assert not mask[b, n:].any()  # padding only on the right
        out.append(vocab.decode(y[b, : n - 1]))
    return out


def test_every_epoch_visits_every_line_once_in_a_seeded_order():
    text, vocab, ids = _corpus()
    starts, lengths = line_spans(ids, vocab.eos_id)
    lb = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=3, seed=5)
    assert lb.n_batches == 4 and lb.n_chars == len(text)
    epochs = []
    for e in range(3):
        seen = []
        for k in range(e * lb.n_batches, (e + 1) * lb.n_batches):
            seen += _lines_of(lb, vocab, k)
        assert sorted(seen) == sorted(NAMES)
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=3, seed=5)
    assert [_lines_of(again, vocab, k) for k in range(8, 12)] == [
        _lines_of(lb, vocab, k) for k in range(8, 12)
    ]  # batch k is a function of k: resume reads the same batches
    other = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=3, seed=6)
    assert [_lines_of(other, vocab, k) for k in range(4)] != epochs[0]


def test_lines_of_similar_length_share_a_batch():
    rng = np.random.default_rng(0)
    names = ["x" * int(n) for n in rng.integers(1, 40, 2000)]
    text, vocab, ids = _corpus(names)
    starts, lengths = line_spans(ids, vocab.eos_id)
    lb = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=32, seed=0)
    real = padded = 0
    for k in range(lb.n_batches):
        _, _, mask = lb.batch(k)
        real += int(mask.sum())
        padded += mask.size
    assert real == lb.n_chars
    assert padded < 1.05 * real  # unsorted batches of 32 would pad about 50%


def test_long_lines_are_capped_not_dropped():
    names = ["ab", "abcdefghij"]
    text, vocab, ids = _corpus(names)
    starts, lengths = line_spans(ids, vocab.eos_id)
    lb = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=2, max_steps=4)
    assert lb.n_capped == 1
    x, y, mask = lb.batch(0)
    long = int(np.argmax(mask.sum(axis=1)))
    assert vocab.decode(x[long]) == "\nabc" and vocab.decode(y[long]) == "abcd"
    assert mask[long].all()


def test_padded_batch_equals_the_sum_over_single_lines():
    """Loss × chars and gradients × chars of a masked batch = the sum over its lines."""
    text, vocab, ids = _corpus()
    starts, lengths = line_spans(ids, vocab.eos_id)
    lb = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=4, seed=1)
    for cell in ("rnn", "gru", "lstm"):
        model = _model(vocab, cell, layers=2)
        x, y, mask = lb.batch(0)
        assert not mask.all()  # the batch really is padded
        loss, grads, _, _ = model.loss_and_grads(x, y, None, mask=mask)
        n = int(mask.sum())
        batch_total = loss * n
        batch_grads = grads.flat.copy() * n
        total = 0.0
        summed = np.zeros_like(batch_grads)
        for b in range(x.shape[0]):
            m = int(mask[b].sum())
            lb_, g, _, _ = model.loss_and_grads(x[b : b + 1, :m], y[b : b + 1, :m], None)
            total += lb_ * m
            summed += g.flat * m
        assert math.isclose(batch_total, total, rel_tol=1e-12)
        np.testing.assert_allclose(batch_grads, summed, rtol=1e-10, atol=1e-13)
        # padding is ignored whatever it holds
        x2 = np.where(mask, x, (x + 1) % vocab.size)
        y2 = np.where(mask, y, (y + 2) % vocab.size)
        loss2, grads2, _, _ = model.loss_and_grads(x2, y2, None, mask=mask)
        assert loss2 == pytest.approx(loss, rel=1e-13)
        np.testing.assert_allclose(grads2.flat * n, batch_grads, rtol=1e-10, atol=1e-13)


def test_masked_loss_gradient_check():
    text, vocab, ids = _corpus()
    starts, lengths = line_spans(ids, vocab.eos_id)
    lb = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=3, seed=2)
    model = _model(vocab, "gru")
    x, y, mask = lb.batch(1)
    assert not mask.all()
    _, grads, _, _ = model.loss_and_grads(x, y, None, mask=mask)
    ana = grads.flat.copy()
    flat = model.params.flat
    num = np.zeros_like(flat)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + 1e-5
        up = model.loss_and_grads(x, y, None, mask=mask)[0]
        flat[i] = old - 1e-5
        down = model.loss_and_grads(x, y, None, mask=mask)[0]
        flat[i] = old
        num[i] = (up - down) / 2e-5
    err = np.abs(num - ana).max() / max(np.abs(num).max(), np.abs(ana).max())
    assert err < 1e-6


def test_validation_split_is_deterministic_disjoint_and_distinct():
    rng = np.random.default_rng(0)
    names = [f"n{int(i)}" for i in rng.integers(0, 300, 1000)]  # many duplicates
    text, vocab, ids = _corpus(names)
    starts, lengths = line_spans(ids, vocab.eos_id)
    tr, va = split_lines(ids, starts, lengths, 0.1, seed=3)

    def texts(idx):
        return [vocab.decode(ids[starts[i] : starts[i] + lengths[i]]) for i in idx]

    val, train = texts(va), texts(tr)
    distinct = set(names)
    assert len(val) == len(set(val)) == round(0.1 * len(distinct))
    assert not set(val) & set(train)  # no name on both sides
    assert len(train) + sum(names.count(v) for v in val) == len(names)  # duplicates train
    tr2, va2 = split_lines(ids, starts, lengths, 0.1, seed=3)
    assert tr2.tolist() == tr.tolist() and va2.tolist() == va.tolist()
    _, va3 = split_lines(ids, starts, lengths, 0.1, seed=4)
    assert set(texts(va3)) != set(val)
    # the sample depends on the set of names, not on the order of the file
    shuffled = list(reversed(names))
    t2, v2, ids2 = _corpus(shuffled)
    s2, n2 = line_spans(ids2, v2.eos_id)
    _, va4 = split_lines(ids2, s2, n2, 0.1, seed=3)
    assert {v2.decode(ids2[s2[i] : s2[i] + n2[i]]) for i in va4} == set(val)


def test_two_distinct_lines_are_enough():
    text, vocab, ids = _corpus(["rex", "rex", "fido"])
    starts, lengths = line_spans(ids, vocab.eos_id)
    tr, va = split_lines(ids, starts, lengths, 0.1, seed=0)
    assert len(va) == 1 and len(tr) >= 1
    assert split_lines(ids, starts, lengths, 0.0, seed=0)[1].size == 0


def test_training_and_sampling_start_from_the_same_state():
    """The first training position sees what the sampler's first draw sees."""
    text, vocab, ids = _corpus()
    starts, lengths = line_spans(ids, vocab.eos_id)
    lb = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=4, seed=0)
    model = _model(vocab, "lstm", layers=2)
    x, y, mask = lb.batch(0)
    logits, _, _ = model.forward(x, None)  # (T*B, V) time-major
    first = logits[: x.shape[0]]  # (B, V) position 0 of every line
    _, start_logits = Sampler(model, vocab).start(x.shape[0])  # (V, B)
    np.testing.assert_allclose(first, start_logits.T, rtol=1e-10, atol=1e-12)


def test_names_validation_is_the_per_line_score():
    names = NAMES[:8]
    text, vocab, ids = _corpus(names)
    starts, lengths = line_spans(ids, vocab.eos_id)
    val = LineBatches(ids, starts, lengths, vocab.eos_id, batch_size=3, shuffle=False)
    model = _model(vocab, "gru")
    rows = score_lines(model, vocab, names)
    want = -sum(lp for lp, _ in rows) / sum(n for _, n in rows)
    assert evaluate(model, val, 1) == pytest.approx(want, rel=1e-12)


def _names_run(patience: int, steps: int = 60, eval_every: int = 5):
    text, vocab, ids = _corpus(NAMES * 3)
    starts, lengths = line_spans(ids, vocab.eos_id)
    tr, va = split_lines(ids, starts, lengths, 0.3, seed=0)
    lb = LineBatches(ids, starts[tr], lengths[tr], vocab.eos_id, batch_size=4, seed=0)
    val = LineBatches(ids, starts[va], lengths[va], vocab.eos_id, 64, shuffle=False)
    cfg = ModelConfig(vocab_size=vocab.size, hidden=16)
    tc = TrainConfig(batch_size=4, mode="names", eval_every=eval_every, patience=patience)
    ts = TrainState.fresh(cfg, OptimConfig(lr=0.05), tc)
    return ts, list(train(ts, lb, val, total_steps=steps))


def test_names_training_learns_and_early_stopping_stops():
    ts, events = _names_run(patience=0, steps=60)
    evals = [e for e in events if isinstance(e, EvalStats)]
    assert ts.step == 60 and not any(e.early_stop for e in evals)
    losses = [e.loss for e in events if not isinstance(e, EvalStats)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    # with lr 0.05 on 8 names validation overfits quickly: patience ends the run
    ts2, events2 = _names_run(patience=2, steps=400)
    evals2 = [e for e in events2 if isinstance(e, EvalStats)]
    assert evals2[-1].early_stop and ts2.step < 400
    assert sum(e.early_stop for e in evals2) == 1
    best = int(np.argmin([e.val_loss for e in evals2]))
    assert len(evals2) - 1 - best == 2


def test_line_batches_need_a_line():
    ids = np.zeros(0, dtype=np.int32)
    with pytest.raises(CorpusError):
        LineBatches(ids, ids.astype(np.int64), ids.astype(np.int64), 0, 4)


# --------------------------------------------------------------------------- sampling contract


def _sampler(eos_bias: float = 0.0, seed: int = 0):
    from charrnn.sampler import Sampler

    text, vocab, ids = _corpus(["ab", "ba", "a", "b"])
    cfg = ModelConfig(vocab_size=vocab.size, hidden=4)
    model = CharRNN(cfg, rng=np.random.default_rng(seed))
    model.params["Wya"][...] = 0.0
    model.params["by"][...] = 0.0
    model.params["by"][vocab.eos_id] = eos_bias  # how often a name ends (empty: at once)
    return Sampler(model, vocab), vocab


def _known(train, val):
    from charrnn.sampler import KnownLines, line_hashes

    return KnownLines(line_hashes([*train, *val]), line_hashes(val))


def test_n_names_are_exactly_n_non_empty_names():
    from charrnn.sampler import NameFilter, SampleOptions, draw_names

    smp, _ = _sampler(eos_bias=1.0)  # about 1 draw in 2 is empty
    plain = smp.lines(200, 20, SampleOptions(), np.random.default_rng(0))
    assert sum(s.text == "" for s in plain) > 50  # the raw sampler does draw empty names
    got = draw_names(smp, 200, 20, SampleOptions(), np.random.default_rng(0))
    assert got.complete and len(got.samples) == 200
    assert all(s.text for s in got.samples)
    assert got.rejected["short"] == got.draws - 200 > 50
    # min_length 0 (a corpus with blank lines) keeps empty names
    with_blank = draw_names(
        smp, 200, 20, SampleOptions(), np.random.default_rng(0), filt=NameFilter(0)
    )
    assert any(s.text == "" for s in with_blank.samples) and with_blank.draws == 200
    longer = draw_names(smp, 50, 20, SampleOptions(), np.random.default_rng(1), filt=NameFilter(3))
    assert longer.complete and all(len(s.text) >= 3 for s in longer.samples)


def test_origin_tags_and_novel_names():
    from charrnn.sampler import NameFilter, SampleOptions, draw_names

    smp, _ = _sampler(eos_bias=0.5)
    known = _known(train=["a", "ab"], val=["b", "ba"])
    got = draw_names(smp, 300, 6, SampleOptions(), np.random.default_rng(0), known=known)
    for s, where in zip(got.samples, got.origins, strict=True):
        want = "val" if s.text in ("b", "ba") else "train" if s.text in ("a", "ab") else "new"
        assert where == want
    assert {"train", "val", "new"} <= set(got.origins)
    novel = draw_names(
        smp,
        100,
        6,
        SampleOptions(),
        np.random.default_rng(0),
        filt=NameFilter(novel=True),
        known=known,
    )
    assert novel.complete and len(novel.samples) == 100
    assert not {s.text for s in novel.samples} & {"a", "ab", "b", "ba"}  # neither train nor val
    assert set(novel.origins) == {"new"} and novel.rejected["known"] > 0
    with pytest.raises(ValueError):
        draw_names(
            smp, 1, 6, SampleOptions(), np.random.default_rng(0), filt=NameFilter(novel=True)
        )


def test_unique_and_a_filter_that_cannot_be_met():
    from charrnn.sampler import NameFilter, SampleOptions, draw_names

    smp, _ = _sampler(eos_bias=3.0)  # almost every name has 1 or 2 characters
    uniq = draw_names(
        smp, 4, 2, SampleOptions(), np.random.default_rng(0), filt=NameFilter(unique=True)
    )
    assert uniq.complete and len({s.text for s in uniq.samples}) == 4
    # only 2 + 4 names of at most 2 characters exist: 10 unique ones cannot be found
    short = draw_names(
        smp,
        10,
        2,
        SampleOptions(),
        np.random.default_rng(0),
        filt=NameFilter(unique=True),
        budget=3000,
    )
    assert not short.complete and short.draws == 3000
    assert len(short.samples) == len({s.text for s in short.samples}) == 6
    assert short.rejected["repeat"] == 3000 - 6 - short.rejected["short"]


def test_line_split_fits_tiny_corpora():
    from charrnn.batches import line_split

    text, vocab, ids = _corpus(["rex", "fido"])
    sp = line_split(ids, vocab.eos_id, 32, 0.1, split_seed=0, seed=0)
    assert sp.train.n_lines == 1 and sp.train.batch_size == 1
    assert sp.val is not None and sp.val.n_lines == 1
    text, vocab, ids = _corpus(["rex"])
    sp = line_split(ids, vocab.eos_id, 32, 0.1, split_seed=0, seed=0)
    assert sp.train.n_lines == 1 and sp.val is None
    text, vocab, ids = _corpus(["", ""])
    with pytest.raises(CorpusError):
        line_split(ids, vocab.eos_id, 32, 0.1, split_seed=0, seed=0)


# --------------------------------------------------------------------------- train (session, CLI)

PETS = [
    "rex", "fido", "bella", "max", "luna", "charlie", "lucy", "cooper", "daisy", "milo",
    "bailey", "sadie", "rocky", "molly", "buddy", "coco", "toby", "rosie", "oscar", "ruby",
]  # fmt: skip


def _train_json(invoke, args):
    import json

    r = invoke(["train", *args, "--json"])
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_a_20_line_corpus_trains_and_samples_with_default_options(invoke, tmp_path):
    from charrnn.store import Store

    pets = tmp_path / "pets.txt"
    pets.write_text("\n".join(PETS) + "\n")
    doc, err = _train_json(invoke, [str(pets), "--store", str(tmp_path / "s")])
    assert "on 18 lines, each from the start state" in err and "2 distinct held-out lines" in err
    assert doc["status"] in ("done", "stopped early") and doc["best_step"] is not None
    ck = Store(tmp_path / "s").latest("pets")
    assert ck.meta["train"]["mode"] == "names" and ck.meta["train"]["patience"] == 5
    assert ck.meta["optim"]["lr"] == 5e-3  # names mode's default learning rate
    assert len(ck.arrays["corpus.val_hashes"]) == 2
    r = invoke(["sample", "--store", str(tmp_path / "s"), "-n", "25", "--seed", "1"])
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 25 and all(r.stdout.splitlines())


def test_two_distinct_lines_train_in_names_mode(invoke, tmp_path):
    two = tmp_path / "two.txt"
    two.write_text("rex\nfido\n")
    doc, err = _train_json(
        invoke, [str(two), "--mode", "names", "--store", str(tmp_path), "--steps", "5"]
    )
    assert doc["step"] == 5 and "on 1 line," in err and "1 distinct held-out line " in err


def test_a_short_prose_corpus_shrinks_the_batch_and_says_so(invoke, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the quick brown fox jumps over the lazy dog. " * 10)
    doc, err = _train_json(invoke, [str(short), "--store", str(tmp_path), "--steps", "3"])
    said = [line for line in err.splitlines() if "training text is short" in line]
    assert len(said) == 1 and "--batch-size 6 --seq-len 64" in said[0], err
    assert doc["step"] == 3


def test_names_resume_is_bit_identical(invoke, tmp_path):
    from charrnn.store import Store

    small = ["--hidden", "16", "--batch-size", "8", "-q", "--eval-every", "10", "--patience", "0"]
    for run, cuts in (("straight", [30]), ("resumed", [10, 23, 30])):
        for steps in cuts:
            args = ["train", str(DINOS), "--store", str(tmp_path), "--run", run, *small]
            assert invoke([*args, "--steps", str(steps)]).exit_code == 0
    a, b = Store(tmp_path).latest("straight"), Store(tmp_path).latest("resumed")
    assert a.step == b.step == 30
    for k in a.arrays:
        if k.startswith(("param.", "opt.")):
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


def test_early_stopping_says_why_in_json(invoke, tmp_path):
    doc, err = _train_json(
        invoke,
        [str(DINOS), "--store", str(tmp_path), "--hidden", "32", "--lr", "0.05"]
        + ["--batch-size", "64", "--eval-every", "10", "--patience", "2", "--steps", "2000", "-q"],
    )
    assert doc["status"] == "stopped early" and doc["step"] < 2000
    assert "no new best validation loss in the last 2 validations" in doc["stop_reason"]
    assert doc["step"] == doc["best_step"] + 2 * 10


def test_names_validation_cadence():
    from charrnn.session import names_eval_every

    assert names_eval_every(20, 0.1, 32) == 10  # pets: every few epochs, not every 100
    assert names_eval_every(1536, 0.1, 32) == 100  # dinos
    assert names_eval_every(70_000, 0.1, 32) == 750  # validation stays under a tenth


# --------------------------------------------------------------------------- sample (CLI)


@pytest.fixture(scope="module")
def names_store(tmp_path_factory):
    """A names run that overfits (so its best checkpoint is not its latest)."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("names")
    args = ["train", str(DINOS), "--store", str(root), "-q", "--hidden", "32", "--lowercase"]
    args += ["--eval-every", "30", "--patience", "0"]
    r = run_cli([*args, "--steps", "270", "--lr", "0.02"])
    assert r.exit_code == 0, r.stderr
    r = run_cli([*args, "--steps", "300", "--lr", "1.0"])  # worse: the best stays at 270
    assert r.exit_code == 0, r.stderr
    return root


def _sample(invoke, store, *args):
    return invoke(["sample", "--store", str(store), "dinos", "--seed", "1", *args])


def test_sample_uses_the_best_checkpoint_unless_told(invoke, names_store):
    import json

    from charrnn.store import Store

    best = Store(names_store).best("dinos")
    assert best is not None and best.step < 300  # the fixture's run overfits
    r = _sample(invoke, names_store, "-n", "5")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 5
    said = r.stderr.splitlines()  # one line (time-stamped when stderr is not a terminal)
    assert len(said) == 1 and said[0].endswith(
        f"using run 'dinos': its best checkpoint, step {best.step} (validation "
        f"{best.meta['best_val']:.4f} nats/char); --latest for step 300"
    )
    assert _sample(invoke, names_store, "-n", "5", "--best").stdout == r.stdout
    latest = _sample(invoke, names_store, "-n", "5", "--latest")
    assert latest.stderr == "" and latest.stdout != r.stdout
    same = invoke(["sample", "--store", str(names_store), "dinos:300", "--seed", "1", "-n", "5"])
    assert same.stdout == latest.stdout and same.stderr == ""
    # score picks the same checkpoint
    names = tmp = names_store / "few.txt"
    tmp.write_text("tyrannosaurus\nvelociraptor\n")
    s = invoke(["score", str(names), "--store", str(names_store), "--model", "dinos", "--json"])
    doc = json.loads(s.stdout)
    assert doc["checkpoint"].endswith("best.npz") and "its best checkpoint" in s.stderr


def test_json_origin_tags_and_novel_against_train_and_val(invoke, names_store):
    import json

    from charrnn.store import Store

    lines = DINOS.read_text().lower().split("\n")
    ck = Store(names_store).best("dinos")
    val = {s for s in lines if is_known(s, ck.arrays["corpus.val_hashes"])}
    assert len(val) == round(0.1 * len(set(lines) - {""}))
    r = _sample(invoke, names_store, "-n", "3000", "--json", "-t", "0.7")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 3000
    for row in rows:
        want = "val" if row["text"] in val else "train" if row["text"] in lines else "new"
        assert row["origin"] == want, row
    assert {"train", "new"} <= {row["origin"] for row in rows}
    # a validation name, primed with all but its last characters: tagged "val"
    name = max((v for v in val if v.endswith("saurus")), key=len)
    r = _sample(invoke, names_store, "-n", "200", "--json", "-t", "0.5", "--prime", name[:-3])
    origins = {json.loads(x)["text"]: json.loads(x)["origin"] for x in r.stdout.splitlines()}
    assert origins.get(name) == "val", (name, sorted(origins)[:10])
    r = _sample(invoke, names_store, "-n", "300", "--novel", "-t", "0.7")
    got = r.stdout.splitlines()
    assert r.exit_code == 0 and len(got) == 300
    assert not set(got) & set(lines)  # neither a training nor a validation name
    assert "train/val names" in r.stderr


def test_filters_that_cannot_be_met_print_what_was_found_and_exit_4(invoke, names_store):
    r = _sample(invoke, names_store, "-n", "20", "--unique", "-t", "0")  # greedy: one name
    assert r.exit_code == 4
    assert len(r.stdout.splitlines()) == 1
    assert "only 1 of 20 names passed the filters in 2000 draws" in r.stderr.splitlines()[-1]
    r = _sample(invoke, names_store, "-n", "50", "--unique", "--min-length", "12")
    got = r.stdout.splitlines()
    assert r.exit_code == 0 and len(got) == len(set(got)) == 50
    assert min(len(s) for s in got) >= 12
    r = invoke(["sample", "--store", str(names_store), "dinos", "--mode", "prose", "--unique"])
    assert r.exit_code == 2
