"""Seconds and peak-RSS growth of one call, shared by the benchmark scripts that report memory.

`ru_maxrss` is the process's high-water mark, so it can only be read as growth of that mark: a call measured
after a hungrier one in the same process reports 0 MiB, not its own footprint. Measure the call whose memory
matters first, or say in the output that a later figure is growth above the earlier peak.
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


def measured(call: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """Run `call` once; return its result and {"seconds", "peak_rss_growth_mib"} (growth of the high-water mark)."""
    rss0, t0 = rss_peak_mib(), time.perf_counter()
    out = call()
    return out, {"seconds": time.perf_counter() - t0, "peak_rss_growth_mib": rss_peak_mib() - rss0}
