"""Helpers shared by the dataset adapters: finding a dataset's root, reading lines and TSV rows per item.

Error policy of every adapter in this package (stage one relies on it):

* A whole-file layout problem (a missing annotation file, a wrong TSV header, JSON that does not parse, an IDX
  file with a bad magic number, a line whose key cannot be parsed at all) raises ``DatasetFormatError`` naming
  the file and, where there is one, the line.
* One broken item (a non-UTF-8 line, a malformed row in an otherwise good TSV, a caption that links to an image
  id the annotations do not list, a post whose text file is missing) becomes an ``Item`` with ``error=<reason>``.
  ``extract`` records it as skipped or stops on it, per ``--on-error``. A malformed row whose ids cannot be read
  becomes one text item named ``<file>:<line>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from embedcache.datasets.base import BadItemError, DatasetFormatError, DatasetNotFoundError, Item, Pair, Split
from embedcache.datasets.images import decode_text
from embedcache.errors import BadInputError
from embedcache.paths import raw_dir


def find_root(
    name: str,
    root: str | Path | None,
    markers: Sequence[str | tuple[str, ...]],
    layout: str,
    fix: str,
    *,
    nested: Sequence[str] = (),
    well_known: Sequence[str | Path] = (),
    data_dir: str | Path | None = None,
) -> Path:
    """The first candidate folder that holds every `markers` path, else DatasetNotFoundError.

    Candidates: the explicit `root` (and nothing else when one is given), else ``<data_dir>/raw/<name>`` (data_dir
    None: $EMBEDCACHE_DATA_DIR or ./data), else
    the dataset's `well_known` folders; each candidate is tried as is and with each of the `nested` folder names
    the published archive unpacks to (``tiny-imagenet-200``, ``MVSA_Single``, ...). A tuple marker is satisfied
    by any one of its paths (``train-images-idx3-ubyte`` or its ``.gz``).
    """
    bases = [Path(root)] if root is not None else [raw_dir(name, data_dir), *map(Path, well_known)]
    looked: list[Path] = []
    for base in bases:
        for sub in ("", *nested):
            folder = base / sub if sub else base
            looked.append(folder)
            if all(any((folder / alt).exists() for alt in _alternatives(m)) for m in markers):
                return folder
    needs = ", ".join(" or ".join(_alternatives(m)) for m in markers)
    where = [f"{p} (needs {needs})" for p in looked]
    raise DatasetNotFoundError(name, where, layout, fix)


def _alternatives(marker: str | tuple[str, ...]) -> tuple[str, ...]:
    return (marker,) if isinstance(marker, str) else marker


def decode(raw: bytes, item_id: str) -> tuple[str | None, str | None]:
    """UTF-8 text (images.decode_text's rule) or the reason it is not: (text, None) or (None, reason)."""
    try:
        return decode_text(raw, item_id), None
    except BadItemError as exc:
        return None, exc.reason


def read_lines(path: Path) -> list[bytes]:
    """The lines of a file as bytes (decoded per line, so one bad line spoils one item, not the file).

    A UTF-8 byte-order mark at the start is dropped (MRPC's msr_paraphrase_*.txt begin with one), so are
    line endings (\\n or \\r\\n) and a final empty line.
    """
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


@dataclass(frozen=True)
class Row:
    """One data row of a TSV file: its 1-based line number, fields by column name, or why it is unusable."""

    line: int
    fields: dict[str, str] | None
    error: str | None = None


def read_tsv(path: Path, required: Sequence[str], *, delimiter: str = "\t", extra_ok: bool = False) -> Iterator[Row]:
    """Rows of a delimited file with a header row, split on the delimiter only (no quoting: GLUE's loaders read
    with csv.QUOTE_NONE because sentences contain bare quotes). The header must name every `required` column
    (else DatasetFormatError); a row with the wrong number of fields or bad UTF-8 is yielded with an error.
    With `extra_ok`, fields beyond the header's are ignored (csv.DictReader's behaviour, as the HF builder)."""
    lines = read_lines(path)
    header = lines[0].decode("utf-8", errors="replace").split(delimiter) if lines else []
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetFormatError(
            f"{path}, line 1: header lacks column(s) {', '.join(map(repr, missing))}; "
            f"expected {', '.join(required)}; found {', '.join(map(repr, header)) or 'an empty file'}"
        )
    for n, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        text, why = decode(raw, f"{path.name}:{n}")
        if text is None:
            yield Row(n, None, why)
            continue
        cells = text.split(delimiter)
        if extra_ok:
            cells = cells[: len(header)]
        if len(cells) != len(header):
            yield Row(n, None, f"malformed row: {len(cells)} fields, the header has {len(header)}")
            continue
        yield Row(n, dict(zip(header, cells, strict=True)))


# ((id_a, text_a), (id_b, text_b), score) of one pair row, or the reason the row is unusable.
ParsedPair = tuple[tuple[str, str], tuple[str, str], float] | str


def pairs_split(split: str, rows: Iterable[Row], parse: Callable[[Row], ParsedPair], source: str) -> Split:
    """Text items and pairs of a pair file (GLUE, pairs-tsv): `parse` reads each readable row; an unreadable or
    unusable row becomes one text item ``<source>:<line>`` with the reason; a repeated id is kept once."""
    texts: dict[str, Item] = {}
    pairs: list[Pair] = []
    for row in rows:
        parsed = (row.error or "unreadable row") if row.fields is None else parse(row)
        if isinstance(parsed, str):
            where = f"{source}:{row.line}"
            texts[where] = Item(id=where, error=parsed)
            continue
        (a, ta), (b, tb), score = parsed
        texts.setdefault(a, Item(id=a, text=ta))
        texts.setdefault(b, Item(id=b, text=tb))
        pairs.append(Pair(a, b, score))
    return Split(split, texts=list(texts.values()), pairs=pairs)


def contained(root: Path, name: str | Path, item_id: str) -> Path:
    """``root / name`` if it stays under `root` once resolved (``..``, an absolute name and symlinks followed),
    else BadItemError. A dataset's names (COCO's file_name, a split list's image names, a symlink in an image
    folder) come from files anyone can edit: without this an absolute name or ``..`` reads any file on the
    machine. The reason names the path only, never anything read from it."""
    base, path = Path(root), Path(root) / name
    try:
        real, top = path.resolve(), base.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise BadItemError(item_id, f"path {str(name)!r} cannot be resolved ({type(exc).__name__})") from None
    if real != top and top not in real.parents:
        raise BadItemError(item_id, f"path {str(name)!r} resolves outside the dataset root {top}; refused "
                                    "(an absolute name, '..' or a symlink leading out of the root)")
    return path


def contained_item(root: Path, name: str | Path, item: Item) -> Item:
    """`item` with ``image`` set to the contained path ``root / name``, or with ``error`` set to why not."""
    try:
        return replace(item, image=str(contained(root, name, item.id)))
    except BadItemError as exc:
        return replace(item, image=None, error=item.error or exc.reason)


HASH_LIMIT = 64 << 20  # files up to this size are hashed; larger ones (COCO's instances files) by size and mtime


def file_digests(groups: dict[str, Sequence[Path]]) -> dict[str, str]:
    """label -> a 16-hex digest of the group's files: the sha256 of each file's name and bytes (its size and
    mtime when over HASH_LIMIT), in name order. Absent files are left out. It goes into the store fingerprint."""
    out = {}
    for label, files in sorted(groups.items()):
        digest, seen = hashlib.sha256(), 0
        for path in sorted(Path(p) for p in files):
            if not path.is_file():
                continue
            seen += 1
            digest.update(f"{path.parent.name}/{path.name}\0".encode())
            size = path.stat().st_size
            if size <= HASH_LIMIT:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            else:
                digest.update(f"{size}:{path.stat().st_mtime_ns}".encode())
        if seen:
            out[label] = digest.hexdigest()[:16]
    return out


def require_file(path: Path, what: str, fix: str) -> Path:
    """`path` if it is a file, else DatasetFormatError (the dataset's folder exists but lacks this file)."""
    if not path.is_file():
        raise DatasetFormatError(f"missing {what}: expected the file {path}. {fix}")
    return path


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`, else ValueError naming the option and the allowed values."""
    allowed = list(choices)
    if value not in allowed:
        raise BadInputError(f"option {option}={value!r} is not supported; expected one of "
                            f"{', '.join(map(repr, allowed))}")
    return value


def seeded_split(ids: Sequence[str], seed: int, fractions: Sequence[float]) -> list[list[str]]:
    """Shuffle `ids` with numpy's PCG64 generator seeded by `seed`, then cut by `fractions` (rounded sizes,
    the last part takes the rest): MVSA-Single's 4,511 posts at 8:1:1 -> 3,609 / 451 / 451."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    parts, start = [], 0
    for frac in fractions[:-1]:
        size = int(round(frac * len(ids)))
        parts.append(shuffled[start:start + size])
        start += size
    parts.append(shuffled[start:])
    return parts
