"""The HDF5 embedding store: layout, fingerprint, crash-safe sharded writing, reading.

One file per (dataset, backbone): ``<data-dir>/stores/<dataset>/<backbone>.h5``. Layout of the final file::

    /                          root attrs: every attr given to the writer, plus schema_version, fingerprint
                               (sha256 over all of them) and complete=True. str/int/float/bool values are stored
                               as HDF5 scalars; dicts, lists and None as JSON strings (their keys are listed in
                               the JSON attr ``json_attrs``). ``Store.attrs`` decodes them back.
    /<split>/ids               (N,) vlen utf-8 str: the dataset's own item ids, unique within the split
    /<split>/pooled            (N, D) float16 (attr dtype="float32" for fp32), contiguous, uncompressed
    /<split>/token_offsets     (N+1,) int64, only with tokens: row i's tokens are tokens[off[i]:off[i+1]]
    /<split>/tokens            (T_total, D_tok) pooled's dtype: the ragged token rows, concatenated (D_tok
                               may differ from D: CLIP's tokens are wider than its projected pooled output)
    /<split>/labels            (N,) int64 class index (-1 = none) or (N, C) uint8 multi-hot, when labelled
    /<split>/links             (N,) vlen str: id of the linked item in the other modality ('' = none)
    /<split>/pairs/{a,b,score} (P,) str, (P,) str, (P,) float64: graded text pairs, when the split has them
    /<split>/skipped/{ids,reasons} (S,) str each: items dropped by ``--on-error skip`` and why

Every dataset is contiguous and written with track_times=False, so reading a split is one contiguous read
per dataset and the file's bytes depend only on its contents: a run that was killed and resumed ends
byte-identical to an uninterrupted one, and so does a store filled by several parts.

Writing happens in shards beside the final file, in ``<path>.parts/``: ``manifest.json`` (the fingerprint the
shards belong to), ``lock-<k>-of-<n>`` (flock of the writer of part k of n), ``merge.lock`` and
``<split>/<index:06d>.h5`` (one shard per file, same per-split layout as above, written to ``.h5.tmp`` and
renamed, so a shard is either absent or whole). When every shard of a split exists, ``finish_split`` builds
``<path>.tmp-<pid>`` from the complete splits of the final file plus the merged shards and renames it over the
final path. A SIGKILL at any moment therefore loses at most the shard in flight, and the final file is always
the old complete one or the new complete one, never partial.

Each split group records ``sha256`` (JSON: the sha256 of the bytes of pooled and tokens, hashed while merging).

The package: `layout` (attrs, fingerprint, errors, shard files, split arrays), `writer` (StoreWriter),
`reader` (open_store, Store, StoreSplit, list_stores) and `integrity` (verify_store; the cheap structural
check that the writer, the readers and `ls` run before trusting a file).
"""

from embedcache.store.integrity import verify_store
from embedcache.store.layout import (
    DTYPES,
    SCHEMA_VERSION,
    DamagedStoreError,
    IncompleteStoreError,
    ShardData,
    StaleStoreError,
    StoreError,
    StoreLockedError,
    full_attrs,
    parts_dir,
    store_fingerprint,
)
from embedcache.store.reader import Store, StoreSplit, StoreSummary, list_stores, not_results, open_store, summarize
from embedcache.store.writer import StoreWriter

__all__ = [
    "DTYPES", "SCHEMA_VERSION", "DamagedStoreError", "IncompleteStoreError", "ShardData", "StaleStoreError",
    "Store", "StoreError", "StoreLockedError", "StoreSplit", "StoreSummary", "StoreWriter", "full_attrs",
    "list_stores", "not_results", "open_store", "parts_dir", "store_fingerprint", "summarize", "verify_store",
]
