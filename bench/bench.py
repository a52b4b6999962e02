#!/usr/bin/env python3
"""charrnn against PyTorch CPU on the same machine, in the same run.

    python3 bench/bench.py                  training, sampling, cold start (about 10 minutes)
    python3 bench/bench.py --quick          the same, fewer and shorter rounds (under 2 minutes)
    python3 bench/bench.py --only valloss   validation loss after equal wall-clock time (2×budget)
    python3 bench/bench.py --only memory    peak memory of `charrnn train` on a 1 GiB corpus

Both engines run the same model (cell, layers, hidden size, vocabulary 65, batch, BPTT length),
the same optimizer (Adam 2e-3, global-norm clipping at 5), float32 and the same thread count, on
the same tiny-shakespeare batches. Rounds alternate between the engines so that the machine's
noise hits both; every figure is a median over rounds and ratios are paired per round.

A table goes to stdout (rich), progress to stderr, every figure and the machine to JSON
(bench/results/latest.json by default). PyTorch is a benchmark-only extra
(``pip install torch==2.13.0``); without it charrnn's own figures are still reported.
See bench/README.md for what each figure means and the FLOP model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
DINOS = ROOT / "data" / "dinos.txt"
DEFAULT_JSON = HERE / "results" / "latest.json"
TORCH_PIN = "torch==2.13.0"
SCHEMA = 1

CELLS = ("lstm", "gru", "rnn")
SECTIONS = ("train", "names", "sample", "coldstart", "valloss", "memory")
DEFAULT_SECTIONS = ("train", "names", "sample", "coldstart")

# the targets (medians, same run, ratios charrnn / PyTorch)
# training chars/s against PyTorch (issue 15): LSTM at (a) only (at (b) and (c) both engines sit
# at the matmul-only limit, so a ratio above 1 is out of reach for anyone), GRU and RNN everywhere
TRAIN_TARGETS = {("lstm", "a"): 1.0, "gru": 1.3, "rnn": 1.3}
LIMIT_TARGET = 0.8  # every training config at >= 80% of its matmul-only limit
SAMPLE_TARGETS = {1: 10.0, 256: 1.5}  # sampling chars/s by batch
COLDSTART_TARGET_S = 0.25  # `charrnn sample` process start to first character
MEMORY_CORPUS_FACTOR = 1.5  # peak RSS <= 1.5 x corpus bytes + model

LR = 2e-3
CLIP_NORM = 5.0


@dataclass(frozen=True)
class Config:
    name: str  # a, b, c as in the issue
    layers: int  # L
    hidden: int  # H
    batch: int  # B
    seq_len: int  # T

    @property
    def label(self) -> str:
        return f"({self.name}) {self.layers}×{self.hidden} B={self.batch} T={self.seq_len}"


CONFIGS = {
    "a": Config("a", 1, 128, 32, 64),
    "b": Config("b", 2, 256, 32, 64),
    "c": Config("c", 2, 512, 64, 100),
}
VALLOSS_CONFIG = CONFIGS["b"]  # the race: 2×256 LSTM, B=32, T=64, Adam 2e-3


@dataclass(frozen=True)
class Plan:
    """How long to measure: --quick shrinks everything."""

    rounds: int  # alternating rounds per engine; figures are medians over them
    train_round_s: float  # seconds each engine trains per round
    sample_round_s: float  # seconds each engine samples per round
    min_steps: int  # at least this many training steps per round
    warmup_steps: int  # training steps before timing (also the equivalence check)
    coldstart_runs: int  # timed process starts per command
    matmul_repeats: int  # 2048³ products per ceiling measurement (per config, and at the end)
    peak_steps: int  # training steps in each peak-memory subprocess


FULL = Plan(
    rounds=3,
    train_round_s=2.0,
    sample_round_s=1.0,
    min_steps=3,
    warmup_steps=3,
    coldstart_runs=7,
    matmul_repeats=5,
    peak_steps=3,
)
QUICK = Plan(
    rounds=1,
    train_round_s=0.4,
    sample_round_s=0.25,
    min_steps=2,
    warmup_steps=2,
    coldstart_runs=3,
    matmul_repeats=3,
    peak_steps=0,
)  # 0: no peak-memory processes


# --------------------------------------------------------------------------- small helpers


def train_flops_per_char(cell: str, vocab: int, hidden: int, layers: int) -> int:
    """Matrix-product FLOPs of one training step, per character (see bench/README.md).

    forward, per character and layer l with input width D_l (V for layer 0, H above):
        2·G·H·D_l (input projection) + 2·G·H·H (recurrent product),   G = 4 / 3 / 1 gate blocks
    plus the output layer 2·V·H. Backward costs two products per forward product (the gradient
    of the input and of the weight), so a training step is 3 × forward. Layer 0's one-hot
    input is counted as a dense product for both engines (charrnn gathers instead).
    """
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    fwd = sum(
        2 * G * hidden * ((vocab if layer == 0 else hidden) + hidden) for layer in range(layers)
    )
    fwd += 2 * vocab * hidden
    return 3 * fwd


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def _clean(o: Any) -> Any:
    """JSON-safe: nan/inf become null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _vm_hwm_bytes() -> int:
    """Peak RSS of this process since its exec (VmHWM).

    Not ru_maxrss: Linux carries the parent's high-water mark across fork/vfork and exec into
    the child's ru_maxrss, so a child of a 400 MiB benchmark would never report less than that.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# run a command from a small Python process and report the command's ru_maxrss: launched from
# here directly, it would inherit this process's high-water mark (see _vm_hwm_bytes)
_MAXRSS_LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
hwm = [int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss * 1024,
                  "launcher_hwm": hwm}))
"""


def fmt_rate(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2f}×"


def fmt_mb(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x / 2**20:,.0f} MiB"


def fmt_bytes(x: float) -> str:
    return f"{x / 2**20:.2f} MiB" if x >= 2**20 else f"{x / 2**10:.1f} KiB"


def fmt_needs(row: dict[str, Any]) -> str:
    """What a row's target needs as a fraction of its matmul-only limit; red past 100%."""
    f = row.get("target_limit_fraction")
    if f is None:
        return "—"
    return f"[bold red]{f:.0%} > limit[/]" if row["beyond_limit"] else f"{f:.0%}"


def fmt_met(met: bool | None) -> str:
    if met is None:
        return "—"
    return "[green]yes[/]" if met else "[red]no[/]"


class Log:
    """Progress for the person at the terminal: stderr only (stdout is the report)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{msg}[/]")

    def warn(self, msg: str) -> None:
        self.console.print(f"[yellow]warning:[/] {msg}")


# --------------------------------------------------------------------------- environment


def set_threads(threads: int) -> None:
    """Same thread count for OpenBLAS (NumPy) and OpenMP/MKL (PyTorch); before either loads."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def openblas_info() -> dict[str, Any]:
    """OpenBLAS as NumPy loaded it: version string, kernel, threads (best effort, via ctypes)."""
    import ctypes

    import numpy as np

    info: dict[str, Any] = {}
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=cfg.get("name"), version=cfg.get("version"))
    except Exception:  # noqa: BLE001 (older NumPy: no dicts mode)
        pass
    path = None
    with open("/proc/self/maps") as f:
        for line in f:
            if "openblas" in line.lower() and ".so" in line:
                path = line.split()[-1]
                break
    if path is None:
        return info
    info["library"] = path
    lib = ctypes.CDLL(path)
    for suffix in ("64_", ""):
        for prefix in ("scipy_openblas_", "openblas_"):
            f_threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            if f_threads is None:
                continue
            info["threads"] = int(f_threads())
            for what in ("config", "corename"):
                f = getattr(lib, f"{prefix}get_{what}{suffix}", None)
                if f is not None:
                    f.restype = ctypes.c_char_p
                    info[what] = f().decode()
            return info
    return info


def machine_info(threads: int, torch_mod) -> dict[str, Any]:
    import numpy as np

    import charrnn

    cpu, flags, mem = "unknown", "", 0
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "avx512": "avx512f" in flags.split(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": openblas_info(),
        "charrnn": charrnn.__version__,
        "git_head": _git_head(),
        "threads": threads,
        "loadavg_start": list(os.getloadavg()),
    }
    if torch_mod is not None:
        info["torch"] = {
            "version": torch_mod.__version__,
            "threads": torch_mod.get_num_threads(),
            "mkldnn": bool(
                torch_mod.backends.mkldnn.is_available() and torch_mod.backends.mkldnn.enabled
            ),
            "mkl": bool(torch_mod.backends.mkl.is_available()),
            "adam": "fused" if _torch_adam_is_fused() else "default",
            "parallel_info": torch_mod.__config__.parallel_info(),
        }
    return info


def _torch_adam_is_fused() -> bool:
    import torch_ref

    return bool(torch_ref.adam_options())


def _git_head() -> str | None:
    """The checked-out commit, read from .git (no git process); the tree may be dirtier."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        p = git / ref
        if p.exists():
            return p.read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def wait_for_quiet(max_wait: float, below: float, log: Log) -> None:
    """Poll the 1-minute load average until it drops below ``below`` or max_wait passes."""
    if max_wait <= 0:
        return
    t = time.monotonic()
    while os.getloadavg()[0] >= below and time.monotonic() - t < max_wait:
        log(f"waiting for a quiet machine: load average {os.getloadavg()[0]:.1f}")
        time.sleep(min(15.0, max(0.0, max_wait - (time.monotonic() - t))))


def load_torch(disabled: bool):
    """(torch module or None, why not)."""
    if disabled:
        return None, "--no-torch given"
    try:
        import torch
    except ImportError as e:
        return None, f"PyTorch is not installed ({e})"
    return torch, None


# --------------------------------------------------------------------------- data


class Data:
    """tiny-shakespeare as charrnn reads it: the ids both engines train on, split as
    ``charrnn train`` splits them (charrnn.session.split_batches)."""

    def __init__(self) -> None:
        from charrnn.corpus import load_corpus

        self.corpus = load_corpus(SHAKESPEARE)
        self.vocab = self.corpus.vocab
        self.V = self.vocab.size

    def train_config(self, cfg: Config, seed: int = 0):
        from charrnn.trainer import TrainConfig

        # no validation passes inside the timed loop: the race evaluates on its own
        return TrainConfig(
            batch_size=cfg.batch, seq_len=cfg.seq_len, val_fraction=0.1, eval_every=2**62, seed=seed
        )

    def split(self, cfg: Config):
        from charrnn.session import split_batches

        return split_batches(self.corpus.ids, self.corpus.n_chars, self.train_config(cfg))

    def train_batches(self, cfg: Config):
        return self.split(cfg).train

    def val_batches(self, cfg: Config):
        return self.split(cfg).val


# --------------------------------------------------------------------------- engines


class CharrnnTrain:
    """charrnn's own training loop (charrnn.trainer.train): loss_and_grads, clip, Adam step."""

    name = "charrnn"

    def __init__(
        self,
        data: Data,
        cell: str,
        cfg: Config,
        seed: int = 0,
        model_kw: dict[str, Any] | None = None,
        lr: float = LR,
        optim_kw: dict[str, Any] | None = None,
    ) -> None:
        from charrnn.model import ModelConfig
        from charrnn.optim import OptimConfig
        from charrnn.trainer import TrainState

        self.batches = data.train_batches(cfg)
        self.ts = TrainState.fresh(
            ModelConfig(
                vocab_size=data.V,
                cell=cell,
                hidden=cfg.hidden,
                layers=cfg.layers,
                **(model_kw or {}),
            ),
            OptimConfig(name="adam", lr=lr, clip_norm=CLIP_NORM, **(optim_kw or {})),
            data.train_config(cfg, seed),
        )
        self.gen = None

    @property
    def params(self):
        return self.ts.model.params

    @property
    def steps(self) -> int:
        return self.ts.step

    def run(self, n: int) -> tuple[float, list[float]]:
        """n steps; (seconds, losses)."""
        from charrnn.trainer import StepStats, train

        losses: list[float] = []
        t = time.perf_counter()
        for ev in train(self.ts, self.batches, None, total_steps=self.ts.step + n):
            if isinstance(ev, StepStats):
                losses.append(ev.loss)
        return time.perf_counter() - t, losses

    def advance(self) -> float:
        """One step of an open-ended run (the val-loss race); returns its seconds."""
        from charrnn.trainer import StepStats, train

        if self.gen is None:
            self.gen = train(self.ts, self.batches, None, total_steps=2**62)
        t = time.perf_counter()
        while not isinstance(next(self.gen), StepStats):
            pass
        return time.perf_counter() - t

    def evaluate(self, val) -> float:
        from charrnn.trainer import evaluate

        return evaluate(self.ts.model, val, val.n_batches)


class TorchTrain:
    """The PyTorch reference (bench/torch_ref.py) on the same batches, in the same order."""

    name = "pytorch"

    def __init__(self, data: Data, cell: str, cfg: Config, charrnn_params=None) -> None:
        import torch_ref

        self.batches = data.train_batches(cfg)
        self.tr = torch_ref.TorchTrainer(
            cell, data.V, cfg.hidden, cfg.layers, cfg.batch, lr=LR, charrnn_params=charrnn_params
        )
        self.steps = 0

    def _one(self) -> float:
        k = self.steps % self.batches.n_batches
        if k == 0:
            self.tr.reset_state()  # a new epoch: every stream starts over (as charrnn's trainer)
        x, y = self.batches.batch(k)
        loss = self.tr.step(x, y)
        self.steps += 1
        return loss

    def run(self, n: int) -> tuple[float, list[float]]:
        t = time.perf_counter()
        losses = [self._one() for _ in range(n)]
        return time.perf_counter() - t, losses

    def advance(self) -> float:
        t = time.perf_counter()
        self._one()
        return time.perf_counter() - t

    def evaluate(self, val) -> float:
        return self.tr.evaluate(val)


# idle threads spin a while after their last task (OpenBLAS ~0.1 s, OpenMP less) before they
# sleep: a pause between turns keeps one engine's spinning threads out of the other's timing
COOL_DOWN_S = 0.2


def alternate(engines: list, rounds: int, run_round) -> dict[str, list[float]]:
    """rounds × each engine, the order flipped every round (A B, B A, ...)."""
    out: dict[str, list[float]] = {e.name: [] for e in engines}
    for r in range(rounds):
        order = engines if r % 2 == 0 else engines[::-1]
        for e in order:
            time.sleep(COOL_DOWN_S)
            out[e.name].append(run_round(e))
    return out


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True) if y > 0]


# --------------------------------------------------------------------------- sections


class Ceiling:
    """The machine's matrix-product ceiling: GFLOP/s of a 2048³ float32 product.

    Measured with NumPy (OpenBLAS) and PyTorch, a few times during the train section (before
    each configuration), so that a busy moment does not set it: the ceiling is the best
    measurement, each library's typical figure its median.
    """

    N = 2048

    def __init__(self, repeats: int, torch_ok: bool) -> None:
        self.repeats, self.torch_ok = repeats, torch_ok
        self.runs: dict[str, list[float]] = {"numpy": [], "pytorch": []}

    def measure(self, log: Log) -> float:
        import numpy as np

        n = self.N
        log(f"ceiling: {n}³ float32 matrix product ×{self.repeats}")
        rng = np.random.default_rng(0)
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        np.matmul(a, b, out=c)
        for _ in range(self.repeats):
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            self.runs["numpy"].append(2 * n**3 / (time.perf_counter() - t) / 1e9)
        if self.torch_ok:
            import torch_ref

            self.runs["pytorch"] += torch_ref.matmul_gflops(n, self.repeats)
        return self.best

    @property
    def best(self) -> float:
        return max(self.runs["numpy"] + self.runs["pytorch"], default=math.nan)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.N, "ceiling_gflops": self.best}
        for lib, runs in self.runs.items():
            if runs:
                out[f"{lib}_gflops_median"] = median(runs)
                out[f"{lib}_gflops_best"] = max(runs)
                out[f"{lib}_runs"] = runs
        return out


def bench_train(
    data: Data,
    cells: list[str],
    configs: list[Config],
    plan: Plan,
    torch_ok: bool,
    ceiling: Ceiling,
    log: Log,
) -> list[dict[str, Any]]:
    rows = []
    for cfg in configs:
        ceiling.measure(log)
        for cell in cells:
            rows.append(_train_one(data, cell, cfg, plan, torch_ok, log))
    ceiling.measure(log)
    best = ceiling.best
    for row in rows:  # against the best ceiling seen in the whole section
        for name in ("charrnn", "pytorch"):
            if name in row:
                row[name]["ceiling_fraction"] = row[name]["gflops"] / best
    return rows


def _train_one(
    data: Data, cell: str, cfg: Config, plan: Plan, torch_ok: bool, log: Log
) -> dict[str, Any]:
    chars_per_step = cfg.batch * cfg.seq_len
    flops = train_flops_per_char(cell, data.V, cfg.hidden, cfg.layers)
    engines: list = [CharrnnTrain(data, cell, cfg)]
    if torch_ok:  # built before charrnn trains: same initial weights where the cells agree
        engines.append(TorchTrain(data, cell, cfg, charrnn_params=engines[0].params))
    # warm-up: the same first batches for both; with the same weights the losses must agree
    warm = {}
    step_s = {}
    for e in engines:
        _, warm[e.name] = e.run(plan.warmup_steps)
        step_s[e.name], _ = e.run(1)  # sizes the rounds
    n_steps = {
        name: max(plan.min_steps, math.ceil(plan.train_round_s / s)) for name, s in step_s.items()
    }
    log(
        f"train {cell} {cfg.label}: "
        + ", ".join(
            f"{k} {n_steps[k]} steps/round ({step_s[k] * 1e3:.0f} ms/step)" for k in n_steps
        )
    )

    def one_round(e) -> float:
        secs, losses = e.run(n_steps[e.name])
        if not all(math.isfinite(x) for x in losses):
            log.warn(f"{e.name} {cell} ({cfg.name}): non-finite loss while timing")
        return n_steps[e.name] * chars_per_step / secs

    rates = alternate(engines, plan.rounds, one_round)
    row: dict[str, Any] = {
        "cell": cell,
        "config": cfg.name,
        **asdict(cfg),
        "vocab": data.V,
        "flops_per_char": flops,
        "steps_per_round": n_steps,
    }
    for name, xs in rates.items():
        cps = median(xs)
        row[name] = {
            "chars_per_s": cps,
            "rounds": xs,
            "gflops": cps * flops / 1e9,
        }
    row["target"] = TRAIN_TARGETS.get((cell, cfg.name), TRAIN_TARGETS.get(cell))
    _limit_and_profile(row, engines[0], data, cell, cfg, plan, log)
    if torch_ok:
        tt = engines[1].tr
        ratios = paired_ratios(rates["charrnn"], rates["pytorch"])
        row["ratio"] = median(ratios)
        row["ratio_rounds"] = ratios
        row["met"] = None if row["target"] is None else row["ratio"] >= row["target"]
        diffs = [abs(a - b) for a, b in zip(warm["charrnn"], warm["pytorch"], strict=True)]
        row["equivalence"] = {
            "same_init": tt.same_init,
            "charrnn_losses": warm["charrnn"],
            "pytorch_losses": warm["pytorch"],
            "max_abs_diff": max(diffs),
        }
        row["equivalence"]["agree"] = max(diffs) <= 1e-3 if tt.same_init else None
        if tt.same_init and max(diffs) > 1e-3:
            log.warn(
                f"{cell} ({cfg.name}): from the same weights on the same batches the losses "
                f"differ by {max(diffs):.2e}: the two engines are not computing the same "
                "training step"
            )
    else:
        row["ratio"] = row["met"] = None
    return row


def _limit_and_profile(row, engine, data, cell, cfg, plan, log) -> None:
    """The matmul-only limit at this shape, each engine's fraction of it, charrnn's profile."""
    from limit import measure_limit, profile_step

    lim = measure_limit(
        cell, data.V, cfg.hidden, cfg.layers, cfg.batch, cfg.seq_len, plan.matmul_repeats
    )
    for name in ("charrnn", "pytorch"):
        if name in row:
            row[name]["limit_fraction"] = row[name]["chars_per_s"] / lim["chars_per_s"]
    ts = engine.ts
    row["profile"] = profile_step(
        ts.model, engine.batches, ts.optimizer.cfg, lim, lambda: engine.run(1), plan.matmul_repeats
    )
    row["limit"] = lim
    row["limit_met"] = row["charrnn"]["limit_fraction"] >= LIMIT_TARGET
    log(
        f"limit {cell} {cfg.label}: {lim['chars_per_s']:.0f} chars/s; charrnn at "
        f"{100 * row['charrnn']['limit_fraction']:.0f}%"
    )


def bench_peak(
    cells: list[str], configs: list[Config], plan: Plan, torch_ok: bool, threads: int, log: Log
) -> list[dict[str, Any]]:
    """Peak RSS of each engine's training, each in its own fresh process."""
    rows = []
    engines = ["charrnn"] + (["pytorch"] if torch_ok else [])
    for cfg in configs:
        for cell in cells:
            row: dict[str, Any] = {"cell": cell, "config": cfg.name}
            for engine in engines:
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--threads",
                    str(threads),
                    "--child-peak",
                    f"{engine},{cell},{cfg.name},{plan.peak_steps}",
                ]
                p = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if p.returncode != 0:
                    log.warn(
                        f"peak memory {engine} {cell} ({cfg.name}) failed: "
                        f"{p.stderr.strip().splitlines()[-1:]}"
                    )
                    continue
                row[engine] = json.loads(p.stdout.strip().splitlines()[-1])
            log(
                f"peak memory {cell} {cfg.label}: "
                + ", ".join(f"{e} {fmt_mb(row[e]['peak_bytes'])}" for e in engines if e in row)
            )
            rows.append(row)
    return rows


def run_child_peak(spec: str) -> None:
    """In a fresh process: build one engine, train a few steps, print RSS figures as JSON."""
    engine, cell, cfg_name, steps = spec.split(",")
    cfg = CONFIGS[cfg_name]
    if engine == "pytorch":
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    data = Data()
    base = _vm_hwm_bytes()
    e = CharrnnTrain(data, cell, cfg) if engine == "charrnn" else TorchTrain(data, cell, cfg)
    e.run(1 + int(steps))
    peak = _vm_hwm_bytes()
    print(
        json.dumps(
            {
                "engine": engine,
                "cell": cell,
                "config": cfg_name,
                "steps": 1 + int(steps),
                "base_bytes": base,
                "peak_bytes": peak,
                "train_bytes": peak - base,
            }
        )
    )


def bench_sample(
    data: Data, cells: list[str], configs: list[Config], plan: Plan, torch_ok: bool, log: Log
) -> list[dict[str, Any]]:
    import numpy as np

    from charrnn.model import CharRNN, ModelConfig
    from charrnn.sampler import SampleOptions, Sampler

    rows = []
    opts = SampleOptions(temperature=1.0)
    for cfg in configs:
        for cell in cells:
            model = CharRNN(
                ModelConfig(vocab_size=data.V, cell=cell, hidden=cfg.hidden, layers=cfg.layers),
                rng=np.random.default_rng(0),
            )
            smp = Sampler(model, data.vocab)
            tm = None
            if torch_ok:
                import torch
                import torch_ref

                torch.manual_seed(0)
                tm = torch_ref.TorchCharModel(cell, data.V, cfg.hidden, cfg.layers).eval()
                torch_ref.copy_from_charrnn(tm, model.params)
            for batch in (1, 256):
                rows.append(_sample_one(data, cell, cfg, batch, smp, opts, tm, plan, log))
    return rows


NAMES_CONFIG = Config("a", 1, 128, 32, 64)  # names: B lines per batch; prose: B streams of T


class _ModeEngine:
    """charrnn's own trainer in one mode on data/dinos.txt: session.split_batches cuts the
    corpus as `charrnn train --mode MODE` does, trainer.train runs the steps."""

    def __init__(self, mode: str, corpus, cfg: Config) -> None:
        from charrnn.model import ModelConfig
        from charrnn.optim import OptimConfig
        from charrnn.session import split_batches
        from charrnn.trainer import TrainConfig, TrainState

        self.name = mode
        tcfg = TrainConfig(
            batch_size=cfg.batch, seq_len=cfg.seq_len, mode=mode, eval_every=2**62, patience=0
        )
        self.batches = split_batches(corpus.ids, len(corpus.ids), tcfg, corpus.vocab).train
        mcfg = ModelConfig(
            vocab_size=corpus.vocab.size, cell="lstm", hidden=cfg.hidden, layers=cfg.layers
        )
        self.ts = TrainState.fresh(mcfg, OptimConfig(lr=LR, clip_norm=CLIP_NORM), tcfg)
        # the targets (real characters) and the (B, T) positions computed, over one epoch
        real = padded = 0
        for k in range(self.batches.n_batches):
            b = self.batches.for_step(k)
            real += b.n_chars
            padded += b.x.size
        self.fill = real / padded  # 1 for prose; names pad each batch to its longest line

    def run(self, n: int) -> tuple[float, float]:
        """n training steps: (chars/s counting real targets only, as the trainer reports
        them; steps/s)."""
        from charrnn.trainer import StepStats, train

        last = None
        t = time.perf_counter()
        for ev in train(self.ts, self.batches, None, total_steps=self.ts.step + n):
            if isinstance(ev, StepStats):
                last = ev
        secs = time.perf_counter() - t
        assert last is not None
        return last.chars_per_sec, n / secs


def bench_names(plan: Plan, log: Log) -> dict[str, Any]:
    """Names-mode training (a batch of whole lines from the zero state, padded on the right,
    the loss masked) against prose mode (truncated BPTT over streams), the same 1×128 LSTM,
    B=32, on data/dinos.txt, through charrnn's trainer: chars/s excluding padding."""
    from charrnn.corpus import load_corpus
    from charrnn.reading import CorpusOptions

    cfg = NAMES_CONFIG
    corpus = load_corpus(DINOS, CorpusOptions())  # no token cache: read into memory
    engines = [_ModeEngine(mode, corpus, cfg) for mode in ("names", "prose")]
    n_steps = {}
    for e in engines:
        e.run(plan.warmup_steps)
        _, steps_per_s = e.run(2)
        n_steps[e.name] = max(plan.min_steps, math.ceil(plan.train_round_s * steps_per_s))
    log("names: " + ", ".join(f"{k} {v} steps/round" for k, v in n_steps.items()))
    rounds = alternate(engines, plan.rounds, lambda e: e.run(n_steps[e.name]))
    row: dict[str, Any] = {
        "corpus": DINOS.name,
        "cell": "lstm",
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "batch": cfg.batch,
        "seq_len_prose": cfg.seq_len,
    }
    for e in engines:
        xs = rounds[e.name]
        row[e.name] = {
            "chars_per_s": median([c for c, _ in xs]),  # real targets only
            "steps_per_s": median([s for _, s in xs]),
            "rounds": [c for c, _ in xs],
            "fill": e.fill,  # real targets / (B, T) positions computed, over one epoch
            "batches_per_epoch": e.batches.n_batches,
            "steps_per_round": n_steps[e.name],
        }
    ratios = paired_ratios(row["names"]["rounds"], row["prose"]["rounds"])
    row["ratio"] = median(ratios)
    row["ratio_rounds"] = ratios
    return row


class _SampleEngine:
    def __init__(self, name: str, fn) -> None:
        self.name, self.fn = name, fn


def _sample_one(data, cell, cfg, batch, smp, opts, tm, plan, log) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)

    def charrnn_run(length: int) -> float:
        t = time.perf_counter()
        for _chunk in smp.stream(length, opts, rng, n=batch):
            pass
        return time.perf_counter() - t

    engines = [_SampleEngine("charrnn", charrnn_run)]
    if tm is not None:
        import torch
        import torch_ref

        gen = torch.Generator().manual_seed(0)
        eos = data.vocab.eos_id

        def torch_run(length: int) -> float:
            t = time.perf_counter()
            ids = torch_ref.sample(tm, eos, length, batch, gen)
            for row in ids:  # decoded like charrnn's stream decodes its chunks
                data.vocab.decode(row)
            return time.perf_counter() - t

        engines.append(_SampleEngine("pytorch", torch_run))
    lengths = {}
    for e in engines:  # warm up, then size each round to about plan.sample_round_s
        e.fn(4)
        probe = 8
        per_step = e.fn(probe) / probe
        lengths[e.name] = int(min(100_000, max(probe, plan.sample_round_s / per_step)))
    log(
        f"sample {cell} {cfg.label} batch {batch}: "
        + ", ".join(f"{k} {v} steps/round" for k, v in lengths.items())
    )
    # the matmul-only limit, timed before the rounds and after every turn: each product's
    # best time over the row, so that a neighbour taking a core for a moment does not set it
    from limit import sample_products, time_sample_products

    from charrnn.cells import CELLS

    stacked = CELLS[cell].stacks_input  # what the sampler's kernel does above layer 0
    products = sample_products(cell, data.V, cfg.hidden, cfg.layers, batch, stacked)
    secs = time_sample_products(products, plan.matmul_repeats)

    def one_round(e) -> float:
        nonlocal secs
        cps = batch * lengths[e.name] / e.fn(lengths[e.name])
        secs = time_sample_products(products, plan.matmul_repeats, secs)
        return cps

    rates = alternate(engines, plan.rounds, one_round)
    row: dict[str, Any] = {
        "cell": cell,
        "config": cfg.name,
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "batch": batch,
        "steps_per_round": lengths,
    }
    for name, xs in rates.items():
        row[name] = {"chars_per_s": median(xs), "rounds": xs}
    row["target"] = SAMPLE_TARGETS[batch]
    _sample_limit(row, products, secs, stacked, log)
    if tm is not None:
        ratios = paired_ratios(rates["charrnn"], rates["pytorch"])
        row["ratio"] = median(ratios)
        row["ratio_rounds"] = ratios
        row["met"] = row["ratio"] >= row["target"]
    else:
        row["ratio"] = row["met"] = None
    return row


def _sample_limit(row, products, secs, stacked: bool, log: Log) -> None:
    """The sampling row's matmul-only limit, each engine's fraction of it and the weight
    bandwidth its speed implies, and what the target needs of the limit."""
    from limit import against_limit, sample_limit_figures

    lim = {**sample_limit_figures(products, secs, row["batch"]), "stacked": stacked}
    engines = [n for n in ("charrnn", "pytorch") if n in row]
    cmp = against_limit({n: row[n]["chars_per_s"] for n in engines}, lim, row["target"])
    for n in engines:
        row[n].update(cmp.pop(n))
    row["limit"] = lim
    row.update(cmp)  # target_chars_per_s, target_limit_fraction, ..., beyond_limit (with PyTorch)
    needs = (
        f"; {row['target']:g}× PyTorch needs {row['target_limit_fraction']:.0%} of it"
        if "target_limit_fraction" in row
        else ""
    )
    log(
        f"sample limit {row['cell']} ({row['config']}) batch {row['batch']}: "
        f"{lim['chars_per_s']:.0f} chars/s ({1e6 * lim['step_s']:.1f} µs of products a step); "
        f"charrnn at {row['charrnn']['limit_fraction']:.0%}{needs}"
    )
    over = [n for n in engines if row[n]["limit_fraction"] > 1.1]
    if over:
        log.warn(
            f"sample {row['cell']} ({row['config']}) batch {row['batch']}: {', '.join(over)} "
            "ran faster than the matmul-only limit: the machine was busy whenever the "
            "products were timed, and this row's limit is too low"
        )


def _charrnn_cmd() -> list[str]:
    """The console script of this interpreter (not a pyenv shim, which adds its own start-up)."""
    beside = Path(sys.executable).parent / "charrnn"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("charrnn")
    return [found] if found else [sys.executable, "-m", "charrnn"]


def _first_byte_s(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds from process start to the first byte on stdout, seconds to exit)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert p.stdout is not None
    first = p.stdout.read(1)
    t_first = time.perf_counter() - t
    p.stdout.read()
    p.wait()
    t_exit = time.perf_counter() - t
    if not first or p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} printed nothing or failed (exit {p.returncode})")
    return t_first, t_exit


def _wall_s(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def _bytecode_env(cache: Path) -> dict[str, str]:
    """The environment with Python's bytecode cache on, kept under ``cache``: what an
    installed package has (pip compiles it at install), where a development shell with
    PYTHONDONTWRITEBYTECODE=1 compiles every module's source at every start."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def bench_coldstart(plan: Plan, torch_ok: bool, log: Log) -> dict[str, Any]:
    """`charrnn sample -n 1` from process start to its first character, against import torch."""
    charrnn = _charrnn_cmd()
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as store:
        log("cold start: training a tiny model on data/dinos.txt (20 steps)")
        subprocess.run(
            [*charrnn, "train", str(DINOS), "--steps", "20", "--store", store, "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        sample_cmd = [*charrnn, "sample", "-n", "1", "--seed", "0", "--store", store]
        cmds: dict[str, list[str]] = {
            "python": [sys.executable, "-c", "pass"],
            "import_numpy": [sys.executable, "-c", "import numpy"],
        }
        if torch_ok:
            cmds["import_torch"] = [sys.executable, "-c", "import torch"]
        first: list[float] = []
        exits: list[float] = []
        source: list[float] = []  # the same start, every module compiled from source
        walls: dict[str, list[float]] = {k: [] for k in cmds}
        # every command runs with bytecode, as installed; the first runs write it and warm
        # the page cache for everyone
        env = _bytecode_env(Path(store) / "pycache")
        no_bytecode = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        _first_byte_s(sample_cmd, env)
        _first_byte_s(sample_cmd, no_bytecode)
        for c in cmds.values():
            _wall_s(c, env)
        log(f"cold start: {plan.coldstart_runs} runs of each, interleaved")
        for _ in range(plan.coldstart_runs):
            f, x = _first_byte_s(sample_cmd, env)
            first.append(f)
            exits.append(x)
            source.append(_first_byte_s(sample_cmd, no_bytecode)[0])
            for k, c in cmds.items():
                walls[k].append(_wall_s(c, env))
    out: dict[str, Any] = {
        "command": "charrnn sample -n 1 --seed 0",
        "executable": charrnn[0],
        "bytecode": "compiled once, as an installed package has it",
        "first_char_s": median(first),
        "first_char_runs": first,
        "exit_s": median(exits),
        "first_char_from_source_s": median(source),
        "first_char_from_source_runs": source,
        "target_s": COLDSTART_TARGET_S,
        "met": median(first) <= COLDSTART_TARGET_S,
    }
    for k, xs in walls.items():
        out[f"{k}_s"] = median(xs)
        out[f"{k}_runs"] = xs
    if torch_ok:
        out["ratio"] = out["import_torch_s"] / out["first_char_s"]  # > 1: charrnn starts faster
    return out


def parse_recipe(text: str) -> tuple[str, dict[str, Any], float, dict[str, Any]]:
    """'cell=gru,forget_bias=0,lr=0.003,lr_decay=0.7,lr_decay_every=700' -> (cell,
    ModelConfig overrides, learning rate, OptimConfig overrides)."""
    cell, kw, lr, okw = "lstm", {}, LR, {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "cell":
            cell = value.strip()
        elif key == "lr":
            lr = float(value)
        elif key == "lr_decay":
            okw[key] = float(value)
        elif key == "lr_decay_every":
            okw[key] = int(value)
        elif key in ("forget_bias", "dropout"):
            kw[key] = float(value)
        elif key in ("embedding",):
            kw[key] = int(value)
        elif key == "peephole":
            kw[key] = value.strip().lower() in ("1", "true", "yes")
        else:
            raise click.BadParameter(f"unknown recipe key {key!r}", param_hint="--valloss-recipe")
    return cell, kw, lr, okw


def bench_valloss(
    data: Data,
    budget: float,
    slices: int,
    init: str,
    torch_ok: bool,
    log: Log,
    recipe: str = "",
) -> dict[str, Any]:
    """Validation loss after the same training wall-clock time, engines in alternating slices.

    Each engine trains ``budget`` seconds of its own step time, in ``slices`` turns that
    alternate with the other engine's, so machine noise hits both alike. Validation (the last
    10% of tiny-shakespeare, every batch, state carried from zero) runs between turns, off
    the clock. ``init``: "own" starts each engine from its own default initialisation (what a
    user of either gets), "same" gives PyTorch charrnn's initial weights (speed alone decides).
    """
    cfg = VALLOSS_CONFIG
    val = data.val_batches(cfg)
    cell, model_kw, lr, optim_kw = parse_recipe(recipe)
    engines: list = [CharrnnTrain(data, cell, cfg, model_kw=model_kw, lr=lr, optim_kw=optim_kw)]
    if torch_ok:
        engines.append(
            TorchTrain(
                data, "lstm", cfg, charrnn_params=engines[0].params if init == "same" else None
            )
        )
    clock = {e.name: 0.0 for e in engines}
    curve: list[dict[str, Any]] = []
    log(
        f"val-loss race: 2×256, B=32, T=64, {budget:.0f} s of training per engine in {slices} "
        f"turns; charrnn {recipe or 'lstm (same as PyTorch)'}, PyTorch nn.LSTM; "
        f"{'the same initial weights' if init == 'same' else 'each its own initialisation'}"
    )
    for s in range(slices):
        until = budget * (s + 1) / slices
        order = engines if s % 2 == 0 else engines[::-1]
        point: dict[str, Any] = {"train_s": until}
        for e in order:
            time.sleep(COOL_DOWN_S)
            while clock[e.name] < until:
                clock[e.name] += e.advance()
        for e in engines:
            point[e.name] = {
                "train_s": clock[e.name],
                "steps": e.steps,
                "val_loss": e.evaluate(val),
            }
        curve.append(point)
        log(
            f"  {until:6.0f} s: "
            + ", ".join(
                f"{e.name} step {point[e.name]['steps']} val {point[e.name]['val_loss']:.4f}"
                for e in engines
            )
        )
    last = curve[-1]
    out: dict[str, Any] = {
        "cell": "lstm",
        **asdict(cfg),
        "lr": LR,
        "charrnn_recipe": {"cell": cell, "lr": lr, **model_kw, **optim_kw},
        "clip_norm": CLIP_NORM,
        "budget_s": budget,
        "init": init,
        "val_chars": val.n_batches * val.batch_size * val.seq_len,
        "curve": curve,
    }
    for e in engines:
        out[e.name] = {
            **last[e.name],
            "chars_per_s": last[e.name]["steps"] * cfg.batch * cfg.seq_len / clock[e.name],
        }
    if torch_ok:
        out["met"] = last["charrnn"]["val_loss"] <= last["pytorch"]["val_loss"]
    return out


def bench_memory(size_mb: int, tmp_root: str, log: Log) -> dict[str, Any]:
    """Peak RSS of `charrnn train BIG --steps 5` on a one-line corpus of size_mb MiB."""
    from charrnn.model import ModelConfig, param_shapes

    charrnn = _charrnn_cmd()
    size = size_mb * 2**20
    work = Path(tempfile.mkdtemp(prefix="charrnn-bench-big-", dir=tmp_root))
    try:
        corpus = work / "big.txt"
        log(f"memory: writing a {size_mb} MiB one-line corpus to {corpus}")
        text = SHAKESPEARE.read_text(encoding="utf-8").replace("\n", " ").encode("utf-8")
        block = text * max(1, (16 << 20) // len(text))
        with open(corpus, "wb") as f:
            left = size
            while left > 0:
                piece = block[:left]
                f.write(piece)
                left -= len(piece)
        cmd = [
            *charrnn,
            "train",
            str(corpus),
            "--steps",
            "5",
            "--store",
            str(work / "store"),
            "--quiet",
            "--sample-every",
            "0",
        ]
        log(f"memory: {' '.join(['charrnn', *cmd[len(charrnn) :]])}")
        t = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-c", _MAXRSS_LAUNCHER, *cmd],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - t
        got = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
        if p.returncode != 0 or got.get("exit") != 0:
            raise RuntimeError(
                f"charrnn train failed (exit {got.get('exit')}): {p.stderr.strip()[-2000:]}"
            )
        vocab = len(set(text.decode("utf-8")))
        n_params = sum(math.prod(s) for s in param_shapes(ModelConfig(vocab_size=vocab)).values())
        model_bytes = 4 * 4 * n_params  # float32 weights, gradients, Adam m and v
        peak = got["maxrss"]
        limit = MEMORY_CORPUS_FACTOR * size + model_bytes
        return {
            "command": " ".join(["charrnn", *cmd[len(charrnn) :]]),
            "corpus_bytes": size,
            "model": "lstm 1×128 (charrnn train's defaults)",
            "model_bytes": model_bytes,
            "peak_bytes": peak,
            "launcher_floor_bytes": got["launcher_hwm"],
            "limit_bytes": limit,
            "peak_over_corpus": peak / size,
            "seconds": seconds,
            "met": peak <= limit,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- report


def targets_summary(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    train = [r for r in res.get("train", []) if r.get("met") is not None]
    if train:
        worst = min(train, key=lambda r: r["ratio"] / r["target"])
        out.append(
            {
                "target": "training ≥ 1.0× PyTorch (LSTM at (a)), ≥ 1.3× (GRU, RNN everywhere)",
                "measured": f"{sum(r['met'] for r in train)}/{len(train)} met, furthest "
                f"{worst['ratio']:.2f}× for ≥ {worst['target']:g}× "
                f"({worst['cell']} {worst['config']})",
                "met": all(r["met"] for r in train),
            }
        )
    limited = [r for r in res.get("train", []) if "limit_met" in r]
    if limited:
        worst = min(limited, key=lambda r: r["charrnn"]["limit_fraction"])
        out.append(
            {
                "target": f"training ≥ {LIMIT_TARGET:.0%} of the matmul-only limit (every config)",
                "measured": f"{sum(r['limit_met'] for r in limited)}/{len(limited)} met, lowest "
                f"{worst['charrnn']['limit_fraction']:.0%} ({worst['cell']} {worst['config']})",
                "met": all(r["limit_met"] for r in limited),
            }
        )
    for batch, target in SAMPLE_TARGETS.items():
        rows = [r for r in res.get("sample", []) if r["batch"] == batch and r["met"] is not None]
        out += sample_targets(batch, target, rows)
    cs = res.get("coldstart")
    if cs:
        out.append(
            {
                "target": f"cold start ≤ {COLDSTART_TARGET_S} s",
                "measured": f"{cs['first_char_s']:.3f} s",
                "met": cs["met"],
            }
        )
    vl = res.get("valloss")
    if vl and "met" in vl:
        out.append(
            {
                "target": "val loss after equal time ≤ PyTorch's",
                "measured": f"{vl['charrnn']['val_loss']:.4f} vs {vl['pytorch']['val_loss']:.4f}",
                "met": vl["met"],
            }
        )
    mem = res.get("memory")
    if mem and "met" in mem:
        out.append(
            {
                "target": "training memory on the big corpus ≤ 1.5× corpus + model",
                "measured": f"{fmt_mb(mem['peak_bytes'])} for {fmt_mb(mem['corpus_bytes'])}",
                "met": mem["met"],
            }
        )
    return out


def _print_sample_limit(rows: list[dict[str, Any]], console) -> None:
    """The sampling limit's own figures: what the products of one step cost alone, and at
    batch 1 (matrix-vector products, memory-bound) the weight bandwidth each speed implies."""
    from rich.table import Table

    rows = [r for r in rows if "limit" in r]
    if not rows:
        return
    t = Table(
        title="Sampling matmul-only limit: the products of one step alone "
        "(GB/s: weights read per character × chars/s; at batch 1 each weight is read once a "
        "character)"
    )
    for col in (
        "cell",
        "config",
        "batch",
        "products µs/step",
        "GFLOP/s",
        "weights/char",
        "limit GB/s",
        "charrnn / PyTorch GB/s",
        "target needs GB/s",
    ):
        t.add_column(col, justify="left" if col in ("cell", "config") else "right")
    for r in rows:
        lim, p = r["limit"], r.get("pytorch")
        one = r["batch"] == 1  # at batch 256 the products are compute-bound: no bandwidth
        t.add_row(
            r["cell"],
            f"({r['config']}) {r['layers']}×{r['hidden']}",
            str(r["batch"]),
            f"{1e6 * lim['step_s']:.1f}",
            f"{lim['gflops']:.1f}",
            fmt_bytes(lim["weight_bytes_per_char"]),
            f"{lim['weight_gbps']:.1f}" if one else "—",
            " / ".join(
                f"{e['weight_gbps']:.1f}" if one and e and "weight_gbps" in e else "—"
                for e in (r["charrnn"], p)
            ),
            f"{r['target_weight_gbps']:.1f}" if one and "target_weight_gbps" in r else "—",
        )
    console.print(t)


def sample_targets(batch: int, target: float, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary of one sampling target. Rows not met whose target needs more than the
    matmul-only limit get a line of their own, status "beyond limit": no implementation of
    the same products reaches them. The other rows (met, or not met although the limit
    would allow it) keep the target's line, status "met" or "not met"."""
    if not rows:
        return []
    name = f"sampling batch {batch} ≥ {target:g}× PyTorch"
    beyond = [r for r in rows if not r["met"] and r.get("beyond_limit")]
    within = [r for r in rows if r["met"] or not r.get("beyond_limit")]
    out = []
    if within:
        worst = min(within, key=lambda r: r["ratio"])
        where = f"{worst['cell']} {worst['config']}"
        if "target_limit_fraction" in worst:
            where += (
                f": needs {worst['target_limit_fraction']:.0%} of the limit, at "
                f"{worst['charrnn']['limit_fraction']:.0%}"
            )
        met = all(r["met"] for r in within)
        out.append(
            {
                "target": name + (" (within the matmul-only limit)" if beyond else ""),
                "measured": f"{sum(r['met'] for r in within)}/{len(within)} met, lowest "
                f"{worst['ratio']:.2f}× ({where})",
                "met": met,
                "status": "met" if met else "not met",
            }
        )
    if beyond:
        beyond.sort(key=lambda r: -r["target_limit_fraction"])
        out.append(
            {
                "target": name + " (beyond the matmul-only limit)",
                "measured": f"{len(beyond)}/{len(rows)} need more than the limit: "
                + ", ".join(
                    f"{r['cell']} {r['config']} {r['target_limit_fraction']:.0%}" for r in beyond
                ),
                "met": False,
                "status": "beyond limit",
            }
        )
    return out


def _peak_cell(p: dict[str, Any] | None) -> str:
    if not p:
        return "—"
    return f"{p['peak_bytes'] / 2**20:.0f} (+{p['train_bytes'] / 2**20:.0f})"


def _print_profile(rows: list[dict[str, Any]], console) -> None:
    """Where one charrnn training step spends its time (bench/limit.py), % of the step."""
    from rich.table import Table

    rows = [r for r in rows if "profile" in r]
    if not rows:
        return
    phases = list(rows[0]["profile"])
    t = Table(title="Profile of one charrnn training step (% of the step; ms per step)")
    t.add_column("cell")
    t.add_column("config")
    t.add_column("step ms", justify="right")
    for ph in phases:
        t.add_column(ph, justify="right")
    for r in rows:
        step = sum(r["profile"].values())
        t.add_row(
            r["cell"],
            r["config"],
            f"{1e3 * step:.1f}",
            *(
                f"{100 * r['profile'][ph] / step:.0f}% {1e3 * r['profile'][ph]:.1f}"
                for ph in phases
            ),
        )
    console.print(t)


def print_report(res: dict[str, Any], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    m = res["machine"]
    blas = m.get("blas", {})
    torch_line = (
        f"PyTorch {m['torch']['version']} ({m['torch']['threads']} threads, "
        f"oneDNN {'on' if m['torch']['mkldnn'] else 'off'})"
        if "torch" in m
        else "[yellow]PyTorch missing[/]"
    )
    console.print(
        f"[bold]charrnn benchmark[/] {res['date']}  {m['cpu']}, {m['cpus_usable']} "
        f"cpus{', AVX-512' if m['avx512'] else ''}, "
        f"{m['memory_bytes'] / 2**30:.0f} GiB; NumPy {m['numpy']} with "
        f"{blas.get('name', '?')} {blas.get('version', '?')} "
        f"({blas.get('corename', '?')}, {blas.get('threads', '?')} threads); "
        f"{torch_line}; load average {m['loadavg_start'][0]:.1f} at start, "
        f"{m.get('loadavg_end', [math.nan])[0]:.1f} at end"
    )
    if res.get("torch_missing"):
        console.print(f"[yellow]{escape(res['torch_missing'])}[/]")
    ce = res.get("ceiling")
    if ce:
        libs = [
            f"{name} median {ce[f'{lib}_gflops_median']:.0f}, best {ce[f'{lib}_gflops_best']:.0f}"
            for lib, name in (("numpy", "NumPy"), ("pytorch", "PyTorch"))
            if f"{lib}_gflops_median" in ce
        ]
        console.print(
            f"matrix-product ceiling (2048³ float32, GFLOP/s): {'; '.join(libs)}; "
            f"ceiling = the best, {ce['ceiling_gflops']:.0f}"
        )

    if res.get("train"):
        t = Table(title="Training chars/s (forward, backward, clipping, Adam step)")
        for col in (
            "cell",
            "config",
            "charrnn",
            "PyTorch",
            "ratio",
            "range",
            "target",
            "met",
            "limit",
            "% of limit charrnn / PyTorch",
            "charrnn GFLOP/s",
            "PyTorch GFLOP/s",
            "peak MiB (+train) charrnn / PyTorch",
        ):
            t.add_column(col, justify="left" if col in ("cell", "config") else "right")
        peaks = {(p["cell"], p["config"]): p for p in res.get("train_peak", [])}
        for r in res["train"]:
            c, p = r["charrnn"], r.get("pytorch")
            rr = r.get("ratio_rounds") or []
            pk = peaks.get((r["cell"], r["config"]), {})
            t.add_row(
                r["cell"],
                CONFIGS[r["config"]].label,
                fmt_rate(c["chars_per_s"]),
                fmt_rate(p["chars_per_s"]) if p else "—",
                fmt_ratio(r["ratio"]),
                f"{min(rr):.2f}–{max(rr):.2f}" if len(rr) > 1 else "—",
                f"≥{r['target']:g}×" if r["target"] else "—",
                fmt_met(r["met"]),
                fmt_rate(r["limit"]["chars_per_s"]) if "limit" in r else "—",
                " / ".join(
                    f"{100 * e['limit_fraction']:.0f}%" if e and "limit_fraction" in e else "—"
                    for e in (c, p)
                ),
                f"{c['gflops']:.1f} ({100 * c['ceiling_fraction']:.0f}%)",
                f"{p['gflops']:.1f} ({100 * p['ceiling_fraction']:.0f}%)" if p else "—",
                " / ".join(_peak_cell(pk.get(e)) for e in ("charrnn", "pytorch")),
            )
        console.print(t)
        _print_profile(res["train"], console)
    nm = res.get("names")
    if nm:
        t = Table(
            title=f"Names-mode training against prose mode: {nm['layers']}×{nm['hidden']} "
            f"LSTM, B={nm['batch']} (prose T={nm['seq_len_prose']}), {nm['corpus']}, "
            "charrnn's trainer"
        )
        for col in ("mode", "chars/s (padding excluded)", "steps/s", "fill", "batches/epoch"):
            t.add_column(col, justify="left" if col == "mode" else "right")
        for mode in ("names", "prose"):
            e = nm[mode]
            t.add_row(
                mode,
                fmt_rate(e["chars_per_s"]),
                f"{e['steps_per_s']:.1f}",
                f"{100 * e['fill']:.0f}%",
                str(e["batches_per_epoch"]),
            )
        console.print(t)
        rr = nm["ratio_rounds"]
        console.print(
            f"names / prose: {fmt_ratio(nm['ratio'])}"
            + (f" (rounds {min(rr):.2f}–{max(rr):.2f})" if len(rr) > 1 else "")
        )
    if res.get("sample"):
        t = Table(title="Sampling chars/s (temperature 1, from the newline)")
        for col in (
            "cell",
            "config",
            "batch",
            "charrnn",
            "PyTorch",
            "ratio",
            "range",
            "target",
            "met",
            "limit",
            "% of limit charrnn / PyTorch",
            "target needs (% of limit)",
        ):
            t.add_column(col, justify="left" if col in ("cell", "config") else "right")
        for r in res["sample"]:
            p = r.get("pytorch")
            rr = r.get("ratio_rounds") or []
            t.add_row(
                r["cell"],
                f"({r['config']}) {r['layers']}×{r['hidden']}",
                str(r["batch"]),
                fmt_rate(r["charrnn"]["chars_per_s"]),
                fmt_rate(p["chars_per_s"]) if p else "—",
                fmt_ratio(r["ratio"]),
                f"{min(rr):.2f}–{max(rr):.2f}" if len(rr) > 1 else "—",
                f"≥{r['target']:g}×",
                fmt_met(r["met"]),
                fmt_rate(r["limit"]["chars_per_s"]) if "limit" in r else "—",
                " / ".join(
                    f"{e['limit_fraction']:.0%}" if e and "limit_fraction" in e else "—"
                    for e in (r["charrnn"], p)
                ),
                fmt_needs(r),
            )
        console.print(t)
        _print_sample_limit(res["sample"], console)
    cs = res.get("coldstart")
    if cs:
        t = Table(title="Cold start (medians; with bytecode, as installed)")
        t.add_column("command")
        t.add_column("seconds", justify="right")
        t.add_row(f"{cs['command']} (to the first character)", f"{cs['first_char_s']:.3f}")
        t.add_row("    the same, to exit", f"{cs['exit_s']:.3f}")
        if "first_char_from_source_s" in cs:
            t.add_row(
                "    the same, compiling every module from source",
                f"{cs['first_char_from_source_s']:.3f}",
            )
        t.add_row(
            'python -c "import torch"',
            f"{cs['import_torch_s']:.3f}" if "import_torch_s" in cs else "—",
        )
        t.add_row('python -c "import numpy"', f"{cs['import_numpy_s']:.3f}")
        t.add_row('python -c "pass"', f"{cs['python_s']:.3f}")
        console.print(t)
        console.print(
            f"cold start target ≤ {cs['target_s']} s: {fmt_met(cs['met'])}"
            + (f"; import torch takes {cs['ratio']:.1f}× as long" if "ratio" in cs else "")
        )
    vl = res.get("valloss")
    if vl:
        names = [n for n in ("charrnn", "pytorch") if n in vl]
        init = (
            "from the same initial weights"
            if vl.get("init") == "same"
            else "each from its own default initialisation"
        )
        rec = vl.get("charrnn_recipe") or {}
        recipe = ", ".join(f"{k}={v}" for k, v in rec.items())
        t = Table(
            title=f"Validation loss (nats/char, last 10% of tiny-shakespeare) after equal "
            f"training time: 2×256, B=32, T=64; PyTorch nn.LSTM, Adam {LR:g}; charrnn "
            f"{recipe}; {init}"
        )
        t.add_column("train s", justify="right")
        for n in names:
            t.add_column(f"{n} steps", justify="right")
            t.add_column(f"{n} val", justify="right")
        for pt in vl["curve"]:
            t.add_row(
                f"{pt['train_s']:.0f}",
                *[x for n in names for x in (str(pt[n]["steps"]), f"{pt[n]['val_loss']:.4f}")],
            )
        console.print(t)
        if "met" in vl:
            console.print(
                f"val loss after {vl['budget_s']:.0f} s ≤ PyTorch's: {fmt_met(vl['met'])}"
            )
    mem = res.get("memory")
    if mem:
        console.print(
            f"memory: `charrnn train` on a {fmt_mb(mem['corpus_bytes'])} one-line corpus "
            f"peaked at {fmt_mb(mem['peak_bytes'])} "
            f"({mem['peak_over_corpus']:.2f}× the corpus; limit "
            f"{fmt_mb(mem['limit_bytes'])}): {fmt_met(mem['met'])}"
        )
    tg = res.get("targets")
    if tg:
        t = Table(title="Targets")
        t.add_column("target")
        t.add_column("measured")
        t.add_column("met", justify="right")
        for x in tg:
            beyond = x.get("status") == "beyond limit"
            t.add_row(
                x["target"],
                x["measured"],
                "[bold red]beyond limit[/]" if beyond else fmt_met(x["met"]),
            )
        console.print(t)


def write_json(path: Path, res: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(res), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the command


def _csv(allowed: tuple[str, ...] | list[str], what: str):
    def convert(ctx, param, value):
        if value is None:
            return None
        items = [v.strip().lower() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise click.BadParameter(f"{what} must be among {', '.join(allowed)}")
        return list(dict.fromkeys(items))

    return convert


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="One short round per figure: a smoke test (< 2 min).")
@click.option(
    "--only",
    callback=_csv(SECTIONS, "--only"),
    default=None,
    help="Comma-separated sections among train, names, sample, coldstart, valloss, memory. "
    "[default: train,names,sample,coldstart]",
)
@click.option(
    "--valloss",
    "with_valloss",
    is_flag=True,
    help="Also run the val-loss race (2 × --budget seconds).",
)
@click.option(
    "--cells",
    callback=_csv(CELLS, "--cells"),
    default="lstm,gru,rnn",
    show_default=True,
    help="Cells to measure.",
)
@click.option(
    "--configs",
    callback=_csv(tuple(CONFIGS), "--configs"),
    default="a,b,c",
    show_default=True,
    help="a: 1×128 B=32 T=64; b: 2×256 B=32 T=64; c: 2×512 B=64 T=100.",
)
@click.option(
    "--budget",
    type=click.FloatRange(1),
    default=300.0,
    show_default=True,
    help="Seconds of training per engine in the val-loss race.",
)
@click.option(
    "--slices",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Alternating turns (and validation points) in the val-loss race.",
)
@click.option(
    "--valloss-init",
    type=click.Choice(["own", "same"]),
    default="own",
    show_default=True,
    help="Val-loss race: each engine's own default initialisation, or PyTorch from "
    "charrnn's initial weights.",
)
@click.option(
    "--valloss-recipe",
    default="",
    help="Val-loss race: charrnn's side as 'cell=gru,forget_bias=0,lr=0.003,dropout=0.1' "
    "(2×256, B=32, T=64 stay). [default: the same LSTM as PyTorch's]",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=None,
    help="Alternating rounds per figure. [default: 3, or 1 with --quick]",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="Threads for both engines. [default: the usable cpus]",
)
@click.option(
    "--big-corpus-mb",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Size of the generated corpus for the memory section.",
)
@click.option(
    "--tmp",
    "tmp_root",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the memory section writes its corpus. [default: the system temp dir]",
)
@click.option(
    "--no-peak-memory",
    is_flag=True,
    help="Skip the per-config peak RSS subprocesses of the train section.",
)
@click.option("--no-torch", is_flag=True, help="Measure charrnn alone, as if PyTorch were missing.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_JSON,
    show_default="bench/results/latest.json",
    help="Where to write every figure.",
)
@click.option(
    "--wait-quiet",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Wait up to this many seconds for the 1-minute load average to fall below "
    "half the threads before measuring.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--child-peak", hidden=True, default=None)
def main(
    quick: bool,
    only: list[str] | None,
    with_valloss: bool,
    cells: list[str],
    configs: list[str],
    budget: float,
    slices: int,
    valloss_init: str,
    valloss_recipe: str,
    rounds: int | None,
    threads: int | None,
    big_corpus_mb: int,
    tmp_root: str | None,
    no_peak_memory: bool,
    no_torch: bool,
    json_path: Path,
    wait_quiet: float,
    quiet: bool,
    child_peak: str | None,
) -> None:
    """Benchmark charrnn against PyTorch CPU on tiny-shakespeare (see bench/README.md)."""
    threads = threads or len(os.sched_getaffinity(0))
    set_threads(threads)  # before NumPy or PyTorch is imported
    sys.path.insert(0, str(HERE))  # torch_ref
    if child_peak:
        run_child_peak(child_peak)
        return
    sections = only or [*DEFAULT_SECTIONS, *(["valloss"] if with_valloss else [])]
    plan = QUICK if quick else FULL
    if rounds:
        plan = Plan(**{**asdict(plan), "rounds": rounds})
    log = Log(quiet)
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    torch_mod, why = load_torch(no_torch)
    torch_ok = torch_mod is not None
    res: dict[str, Any] = {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "sections": sections,
        "plan": asdict(plan),
    }
    if not torch_ok:
        res["torch_missing"] = (
            f"{why}: reporting charrnn's figures only; for the comparison, "
            f"pip install {TORCH_PIN}  (or pip install -e '.[bench]')"
        )
        log.warn(escape(res["torch_missing"]))
    else:
        torch_mod.set_num_threads(threads)
    wait_for_quiet(wait_quiet, threads / 2, log)
    res["machine"] = machine_info(threads, torch_mod)
    load, usable = res["machine"]["loadavg_start"][0], res["machine"]["cpus_usable"]
    if load > usable:
        log.warn(
            f"load average {load:.1f} on {usable} cpus: "
            "other work is running; figures will be noisy (ratios suffer least)"
        )
    cfgs = [CONFIGS[c] for c in configs]
    t_start = time.perf_counter()
    data = Data() if {"train", "sample", "valloss"} & set(sections) else None

    res["loadavg"] = {}

    def save() -> None:
        res["machine"]["loadavg_end"] = list(os.getloadavg())
        for section in sections:  # the 1/5/15-minute load after each section
            if section in res and section not in res["loadavg"]:
                res["loadavg"][section] = list(os.getloadavg())
        res["seconds"] = time.perf_counter() - t_start
        res["targets"] = targets_summary(res)
        write_json(json_path, res)

    if "train" in sections:
        ceiling = Ceiling(plan.matmul_repeats, torch_ok)
        res["train"] = bench_train(data, cells, cfgs, plan, torch_ok, ceiling, log)
        res["ceiling"] = ceiling.to_json()
        if plan.peak_steps and not no_peak_memory:
            res["train_peak"] = bench_peak(cells, cfgs, plan, torch_ok, threads, log)
        save()
    if "names" in sections:
        res["names"] = bench_names(plan, log)
        save()
    if "sample" in sections:
        res["sample"] = bench_sample(data, cells, cfgs, plan, torch_ok, log)
        save()
    if "coldstart" in sections:
        res["coldstart"] = bench_coldstart(plan, torch_ok, log)
        save()
    if "valloss" in sections:
        res["valloss"] = bench_valloss(
            data, budget, slices, valloss_init, torch_ok, log, valloss_recipe
        )
        save()
    if "memory" in sections:
        res["memory"] = bench_memory(big_corpus_mb, tmp_root or tempfile.gettempdir(), log)
        save()
    save()
    print_report(res, console)
    log(f"wrote {json_path} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
