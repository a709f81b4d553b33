"""Seconds and peak-RSS growth of one call, shared by the benchmark scripts that report memory.

`ru_maxrss` is the process's high-water mark, so it can only be read as growth of that mark: a call measured
after a hungrier one in the same process reports 0 MiB, not its own footprint. A later call measured `since`
the first one's baseline reports max(both footprints): its own whole when it is the hungrier.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def rss_peak_mib() -> float:
    """This process's peak resident set so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(call: Callable[[], T], since: float | None = None) -> tuple[T, dict[str, float]]:
    """Run `call` once; return its result and {"seconds", "peak_rss_growth_mib"}: growth of the high-water mark
    over `since` (an earlier `rss_peak_mib()`, so that a second, hungrier call reports its whole footprint), or over
    the mark just before the call."""
    rss0, t0 = rss_peak_mib() if since is None else since, time.perf_counter()
    out = call()
    return out, {"seconds": time.perf_counter() - t0, "peak_rss_growth_mib": rss_peak_mib() - rss0}
