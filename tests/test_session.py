"""The training session without the command line: what a notebook or the benchmark calls."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest

from charrnn.errors import ConfigError
from charrnn.model import ModelConfig
from charrnn.optim import OptimConfig
from charrnn.request import TrainRequest
from charrnn.session import run_training
from charrnn.trainer import TrainConfig

DINOS = str(Path(__file__).resolve().parent.parent / "data" / "dinos.txt")


def small_request(store: Path, **kw) -> TrainRequest:
    return TrainRequest(
        corpus=(DINOS,),
        store=store,
        model=ModelConfig(vocab_size=1, hidden=16),
        train=TrainConfig(batch_size=8, seq_len=16, eval_every=5),
        **kw,
    )


def test_session_trains_resumes_and_applies_the_resume_policy(tmp_path):
    request = small_request(tmp_path, steps=5)
    result = run_training(request)
    assert result.return_code == 0 and result.status == "done" and result.state.step == 5
    assert result.checkpoint is not None and result.checkpoint.name == "ckpt-000000005.npz"
    assert result.summary()["run"] == "dinos" and result.summary()["val_loss"] > 0
    # an explicitly different model setting is refused (exit 2), a default one is not checked
    gru = dataclasses.replace(request.model, cell="gru")
    with pytest.raises(ConfigError, match="--cell lstm") as e:
        run_training(dataclasses.replace(request, model=gru, steps=8, explicit=frozenset({"cell"})))
    assert e.value.exit_code == 2
    # an explicit learning rate takes over the saved one; the rest stays as saved
    faster = dataclasses.replace(request, optim=OptimConfig(lr=0.01, clip_norm=1.0), steps=8)
    result = run_training(dataclasses.replace(faster, explicit=frozenset({"lr"})))
    assert result.state.step == 8
    assert result.state.optimizer.cfg.lr == 0.01 and result.state.optimizer.cfg.clip_norm == 5.0


def test_request_checks_its_own_values():
    with pytest.raises(ValueError, match="steps"):
        TrainRequest(steps=0)
    with pytest.raises(ValueError, match="run"):
        TrainRequest(run="../elsewhere")
    with pytest.raises(ValueError, match="stdin"):
        TrainRequest(corpus=("-", "-"))


@pytest.mark.parametrize("signum, code", [(None, 0), (signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_result_decides_the_exit_status(tmp_path, signum, code):
    result = run_training(small_request(tmp_path, steps=1))
    assert dataclasses.replace(result, signal=signum).return_code == code


class Recorder:
    """Events that keep what a terminal would have drawn: every bar update's fields."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, dict]] = []
        self.lines: list[str] = []
        self.bar = self  # a live bar: samples would be drawn too

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    warn = info

    def progress(self, total: int, initial: int, desc: str):
        return self

    def update(self, n: int = 1, **postfix) -> None:
        self.updates.append((n, dict(postfix)))

    def close(self) -> None:
        pass

    def close_progress(self) -> None:
        pass


def test_the_bar_names_the_step_of_its_validation_loss_and_shows_the_last_one(tmp_path):
    events = Recorder()
    run_training(small_request(tmp_path, steps=7, sample_every=0), events)
    last_fields = events.updates[-1][1]
    # the final validation (step 7) is on the bar, named with its step; speed says its unit
    assert "val@7" in last_fields and not any(k == "val" for k in last_fields)
    assert "chars/s" in last_fields and "cps" not in last_fields
    assert [k for k in last_fields if k.startswith("val")] == ["val@7"]
