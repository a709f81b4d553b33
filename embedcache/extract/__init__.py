"""Stage one: run a frozen backbone over a dataset once and write its store.

plan (ExtractCfg -> dataset splits, encoder, store attributes and fingerprint) -> an engine that encodes whole
shards (engine.py in this process; ray_engine.py on a pool of Ray workers, imported only when asked for) ->
store/ (crash-safe shards merged into one HDF5 file by the same writer for both engines).
"""

from embedcache.extract.engine import encode_shards, extract, run_plan, split_shards
from embedcache.extract.gpu_decode import DecodeCheck, compare_decode_paths
from embedcache.extract.plan import (
    ExtractCfg,
    ExtractError,
    ExtractPlan,
    RunCfg,
    SplitReport,
    WorkerStat,
    default_workers,
    plan_extraction,
)

__all__ = ["DecodeCheck", "ExtractCfg", "ExtractError", "ExtractPlan", "RunCfg", "SplitReport", "WorkerStat",
           "compare_decode_paths", "default_workers", "encode_shards", "extract", "plan_extraction", "run_plan",
           "split_shards"]
