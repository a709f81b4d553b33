"""How long the model waited for its inputs during one split, and the loud signal when that is too long on a GPU.

The in-process engine times two things on its main thread: blocked waiting for the next batch of inputs (image
decode or file reads in the workers, or tokenising, which runs between batches) and busy (device decode,
transfer, the model). A GPU waiting more than `IDLE_SHARE` of the time is running at the speed of its inputs,
not its own; the warning names the cause and the fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

IDLE_SHARE = 0.25  # warn above this share of wall time spent waiting for inputs (CUDA only)

# the input stage the model waits on -> (what it is, how to make it faster)
CAUSES: dict[str, tuple[str, str]] = {
    "image-decode": ("image decode and preprocessing with PIL in the --workers processes",
                     "decode JPEGs on the GPU with `--decode gpu`, or give it more `--workers`"),
    "disk-read": ("reading image files in the --workers processes (the GPU decodes them)",
                  "more `--workers`, or the images on a faster local disk"),
    "tokeniser": ("tokenising captions on the main thread between batches",
                  "run several `--part K/N` processes on the same GPU so one tokenises while another encodes"),
}


@dataclass
class InputTiming:
    """Seconds one split's main thread spent waiting for inputs vs busy with the device, and what it waited on."""

    cause: str  # a key of CAUSES
    wait_s: float = 0.0
    busy_s: float = 0.0

    @property
    def wait_share(self) -> float:
        total = self.wait_s + self.busy_s
        return self.wait_s / total if total > 0 else 0.0

    def waiting(self) -> AbstractContextManager[None]:
        """Time a block as waiting for inputs."""
        return self._timed("wait_s")

    def busy(self) -> AbstractContextManager[None]:
        """Time a block as busy with the model."""
        return self._timed("busy_s")

    @contextmanager
    def _timed(self, counter: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, counter, getattr(self, counter) + time.perf_counter() - start)


def idle_warning(timing: InputTiming, device_type: str, threshold: float = IDLE_SHARE) -> str | None:
    """The warning for a GPU that waited more than `threshold` of the time for its inputs, naming the cause and
    the fix; None on the CPU (the model and the inputs share its cores) or below the threshold."""
    if device_type != "cuda" or timing.wait_share <= threshold:
        return None
    what, fix = CAUSES[timing.cause]
    return (f"the GPU waited for its inputs {timing.wait_share:.0%} of the time ({timing.wait_s:.1f}s of "
            f"{timing.wait_s + timing.busy_s:.1f}s), on {what}; it runs at the speed of its inputs. Fix: {fix}")
