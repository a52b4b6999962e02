"""Subprocess helper for tests/test_store.py (not a test module).

    python tests/_store_killer.py hold ROOT RUN SECONDS
        take the run's lock, print "locked", hold it for SECONDS, exit
    python tests/_store_killer.py save-loop ROOT RUN MB
        take the lock, print "ready STEP", then save checkpoints STEP, STEP+1, ... of
        about MB megabytes each, forever (the test SIGKILLs it)

Flock locks belong to an open file, so another process is the only honest way to
test them; SIGKILL is the only honest way to test crash safety.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from charrnn.errors import InputMissingError
from charrnn.store import Store


def payload(step: int, n: int) -> dict[str, np.ndarray]:
    """Arrays whose values are a function of the step, so a reader can check them."""
    return {
        "big": np.full(n, float(step)),  # (n,) float64, the bulk of the file
        "ids": np.arange(64, dtype=np.int32) + step,  # (64,) int32
        "step": np.array(step, dtype=np.int64),  # 0-d
    }


def main(argv: list[str]) -> int:
    mode, root, run, arg = argv
    store = Store(root)
    if mode == "hold":
        with store.lock(run):
            print("locked", flush=True)
            time.sleep(float(arg))
        return 0
    if mode == "save-loop":
        n = int(float(arg) * 1e6) // 8
        with store.lock(run):
            try:
                step = store.latest(run).step + 1
            except InputMissingError:
                step = 1
            print(f"ready {step}", flush=True)
            while True:
                store.save(run, step, payload(step, n), {"step": step}, best=step % 5 == 0)
                step += 1
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
