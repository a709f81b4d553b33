"""Stage one: run a frozen backbone over a dataset once and write its store.

plan (dataset splits, encoder, store attributes and fingerprint) -> engine (shards encoded in process,
decode workers, background writes) -> store/ (crash-safe shards merged into one HDF5 file).
"""

from embedcache.extract.engine import extract, run_plan
from embedcache.extract.plan import (
           ExtractError,
           ExtractPlan,
           SplitReport,
           default_device,
           default_workers,
           plan_extraction,
)

__all__ = ["ExtractError", "ExtractPlan", "SplitReport", "default_device", "default_workers", "extract",
           "plan_extraction", "run_plan"]
