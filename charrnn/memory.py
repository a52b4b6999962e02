"""What a command is about to allocate, checked against the memory the machine has,
so that a huge --hidden, --batch-size or --max-length is refused in one line (exit 2)
before anything is allocated, instead of dying with "out of memory" halfway.
"""

from __future__ import annotations

import math
import resource

import numpy as np

from charrnn.errors import ResourceError
from charrnn.model import ModelConfig, param_shapes

__all__ = ["available_bytes", "require", "train_bytes"]

# the share of the available memory one command may plan to use
_SHARE = 0.9


def available_bytes() -> int | None:
    """Memory this process can still get: MemAvailable, capped by an address-space
    limit (ulimit -v); None where neither is known."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append(soft)
    return min(found) if found else None


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f}"  # unreachable


def require(nbytes: float, what: str, fix: str) -> None:
    """Raise ResourceError (exit 2) if ``what`` needs more memory than is available."""
    avail = available_bytes()
    if avail is not None and nbytes > _SHARE * avail:
        raise ResourceError(
            f"{what} needs about {_human(nbytes)} of memory, more than the "
            f"{_human(avail)} available; {fix}"
        )


def train_bytes(cfg: ModelConfig, batch_size: int, seq_len: int, n_chars: int) -> float:
    """A generous estimate of training memory: parameters with their gradients, the
    optimizer state with the spare buffers a step is computed in (7 arrays of the
    parameters' size; 8 are counted), the carried state of every stream, and one batch's
    forward cache (of at most as many positions as the corpus has characters)."""
    item = np.dtype(cfg.dtype).itemsize
    n_params = sum(math.prod(shape) for shape in param_shapes(cfg).values())
    B, T, H, L, V = batch_size, seq_len, cfg.hidden, cfg.layers, cfg.vocab_size
    positions = min(B * T, max(n_chars, 1))  # a longer batch is refused as too long anyway
    per_position = L * H * 10 + 3 * V  # gates (at most 4H), states, caches; logits, probs
    return (8 * n_params + 2 * L * H * B + 2 * positions * per_position) * item
