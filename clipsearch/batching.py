"""How the decode workers take a run's files: in batches, each batch to whichever worker is free (see
pipeline.decoded_batches), the last batches smaller so that the workers finish together.

Nothing here imports torch: the indexer reads the defaults at import, and a run's head start (headstart.py)
needs torch not imported yet.
"""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


CPU_WORKER_CAP = 16
"""Beyond this, decode workers encoding on CPU gain little (memory bandwidth) and each holds a batch."""


def default_workers(gpu: bool = False) -> int:
    """One decode worker per usable core; at most `CPU_WORKER_CAP` where the workers also encode on CPU."""
    return usable_cores() if gpu else max(1, min(usable_cores(), CPU_WORKER_CAP))


SMALLEST_BATCH = 4
"""The smallest batch `guided` cuts (but for the very last): smaller ones cost more in hand-over than they even out."""


def guided(n: int, size: int, workers: int) -> list[list[int]]:
    """The indices 0..n-1 in order, in batches of `size` shrinking towards the end (guided self-scheduling, as
    OpenMP's `schedule(guided)`): each batch at most the remaining files shared among twice the workers, and no
    smaller than `SMALLEST_BATCH` (nor larger than `size`).

    Whatever worker is free takes the next batch, so the workers part only on the last batches: where those are
    full (a batch of 32 is ~5 s of ViT-B-32 on one core), one worker encodes on alone while the others idle.
    500 files in batches of 32 on 2 workers end in batches of 29, 22, 17, 12, 9, 7, 5, 4, 4, 4, 3. With one worker
    or none (decoding in process) there is no one to wait for: plain batches of `size`."""
    batches, start = [], 0
    while start < n:
        step = size if workers < 2 else min(size, max(SMALLEST_BATCH, -(-(n - start) // (2 * workers))))
        batches.append(list(range(start, min(start + step, n))))
        start += step
    return batches
