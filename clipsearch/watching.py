"""Bursts of file-system changes under folders, for `clipsearch watch`: watchfiles watches and debounces;
this module restarts it when a folder disappears or comes back (an unmounted or remounted drive)."""
from __future__ import annotations

import os
import threading
from typing import Iterator, Sequence

DEBOUNCE_MS = 1600
"""watchfiles gathers the changes of a burst (a copy of many photos) until none came for this long."""
RECHECK_MS = 5000
"""How often the folders' presence is checked while nothing changes."""


def change_batches(roots: Sequence[str], stop_event: threading.Event | None = None, *,
                   debounce_ms: int = DEBOUNCE_MS, recheck_ms: int = RECHECK_MS) -> Iterator[list[str]]:
    """The changed paths under the folders `roots`, one list per burst of changes, until `stop_event` is set
    (Ctrl-C raises KeyboardInterrupt). A watcher stops seeing a folder once it is removed or unmounted, so it is
    started again whenever a root is deleted or the roots that exist change (a mount point shows another device);
    a root that comes back is yielded as [root], so that it is indexed again."""
    import watchfiles

    stop = stop_event or threading.Event()
    while not stop.is_set():
        present = _present(roots)
        if not present:
            stop.wait(recheck_ms / 1000)
            continue
        try:
            for changes in watchfiles.watch(*present, stop_event=stop, debounce=debounce_ms,
                                            rust_timeout=recheck_ms, yield_on_timeout=True):
                if changes:
                    yield sorted(path for _, path in changes)
                now = _present(roots)
                lost = {path for change, path in changes if change == watchfiles.Change.deleted} & present.keys()
                if lost or now != present:  # a folder made again may get its old inode back: the event tells
                    back = [root for root in now if root in lost or present.get(root) != now[root]]
                    if back:
                        yield back
                    break
        except FileNotFoundError:  # a root went between the check and the watcher's start: check again
            continue


def _present(roots: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The roots that are folders now, with their device and inode (a remounted drive has new ones)."""
    present = {}
    for root in roots:
        try:
            st = os.stat(root)
        except OSError:
            continue
        if os.path.isdir(root):
            present[root] = (st.st_dev, st.st_ino)
    return present
