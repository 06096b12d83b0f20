"""How the decode workers take a run's files: in batches, handed out in turn (a torch DataLoader gives batch i to
worker i mod workers), a round of one batch per worker at a time.

Nothing here imports torch: the head start (headstart.py) orders its photos by it before torch is imported.
"""
from __future__ import annotations

import itertools
import os


def usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


CPU_WORKER_CAP = 16
"""Beyond this, decode workers encoding on CPU gain little (memory bandwidth) and each holds a batch."""


def default_workers(gpu: bool = False) -> int:
    """One decode worker per usable core; at most `CPU_WORKER_CAP` where the workers also encode on CPU."""
    return usable_cores() if gpu else max(1, min(usable_cores(), CPU_WORKER_CAP))


def even_tail(n: int, size: int, workers: int) -> list[list[int]]:
    """The indices 0..n-1 in batches of `size`, in order, the last round of batches evened out.

    The DataLoader hands batches to its workers in turn, a round of one batch each. Where the last round is short
    (fewer items than `workers` full batches), whoever got a full batch works on alone while the others idle;
    evened out, the workers finish together: 500 photos in batches of 32 on 2 workers end in two batches of 26,
    not 32 and 20."""
    rounds = n // (size * workers) * size * workers if workers > 1 else n
    batches = [list(range(start, min(start + size, rounds))) for start in range(0, rounds, size)]
    rest = n - rounds
    cuts = [rounds + round(rest * k / min(workers, rest)) for k in range(min(workers, rest) + 1)] if rest else []
    return batches + [list(range(a, b)) for a, b in zip(cuts, cuts[1:])]


def in_turn(n: int, size: int, workers: int) -> list[int]:
    """The indices 0..n-1 ordered so that any first k of them fall evenly on the workers: round by round (see
    `even_tail`), the first index of each of the round's batches, then the second of each, and so on. A head start
    decoding photos in this order (headstart.py), stopped anywhere, spares every worker the same work; in file order
    it would spare the first batches', and so the first workers', leaving the others to finish alone."""
    batches = even_tail(n, size, workers)
    rounds = (batches[i:i + max(workers, 1)] for i in range(0, len(batches), max(workers, 1)))
    return [i for round_ in rounds for column in itertools.zip_longest(*round_) for i in column if i is not None]
