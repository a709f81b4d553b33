"""MMSD, the multimodal sarcasm detection release of Cai et al. (2019), and MMSD 2.0's JSON text files.

Published layouts (github headacheboy/data-of-multimodal-sarcasm-detection: text/*.txt, text/Readme.MD,
codes/loadData.py; github JoeYing1019/MMSD2.0: data/text_json_final/*.json, src/data_set.py)::

    <root>/dataset_image/<id>.jpg          the tweets' images (a separate download, by id)
    <root>/text/train.txt                  one python-literal list per line: ['<id>', '<text>', <label>]
    <root>/text/valid2.txt, test2.txt      ['<id>', '<text>', <hashtag label>, <annotator label>]
    <root>/text_json_final/{train,valid,test}.json   MMSD 2.0: [{"image_id", "text", "label"}, ...]
    <root>/text_json_clean/{train,valid,test}.json   MMSD 1.0 with the spurious cues removed (MMSD 2.0 repo)

The label is the last element of each list (Readme.MD: in valid/test, the human annotator's label; the
authors' loader uses lineLS[-1]). Option `version`: "1.0" (text/*.txt), "1.0-clean" or "2.0" (JSON).
Option `keyword_filter` (1.0 only, default off) drops the lines the authors' loadData.py skips (words such as
'sarcasm', 'irony', '<url>', ...). Splits are the published ones: train, valid, test.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path
from typing import Any

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, contained_item, decode, find_root, read_lines, require_file
from embedcache.datasets.download import Source, register_source
from embedcache.errors import BadInputError

CLASSES = ("not sarcastic", "sarcastic")
TXT_FILES = {"train": "train.txt", "valid": "valid2.txt", "test": "test2.txt"}
JSON_DIRS = {"1.0-clean": "text_json_clean", "2.0": "text_json_final"}
# The words whose presence makes loadData.py skip a line (codes/loadData.py, readData).
FILTER_WORDS = frozenset({"sarcasm", "sarcastic", "reposting", "<url>", "joke", "humour", "humor", "jokes", "irony",
                          "ironic", "exgag"})
FIX = ("the text files are in github.com/headacheboy/data-of-multimodal-sarcasm-detection (text/) and "
       "github.com/JoeYing1019/MMSD2.0 (data/text_json_*); the images are shared by the authors from that first "
       "repository's README (no direct download): unpack them to dataset_image/ beside text/")
LAYOUT = """\
<root>/
  dataset_image/<id>.jpg
  text/train.txt  text/valid2.txt  text/test2.txt          (version 1.0)
  text_json_final/train.json  valid.json  test.json        (version 2.0; text_json_clean for 1.0-clean)"""


@DATASETS.register("mmsd")
class Mmsd(Dataset):
    """Multimodal sarcasm detection tweets: image + text, label 1 = sarcastic, published splits."""

    name = "mmsd"
    version = "1"
    modalities = ("image", "text")
    label_kind = "single"

    def __init__(self, root: str | Path | None = None, *, version: str = "1.0", keyword_filter: bool = False) -> None:
        version = check_choice("version", str(version), ("1.0", "1.0-clean", "2.0"))
        if keyword_filter and version != "1.0":
            raise BadInputError("option keyword_filter applies to version 1.0 only (the JSON versions are cleaned)")
        super().__init__(root, version=version, keyword_filter=bool(keyword_filter))

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def splits(self) -> list[str]:
        return list(TXT_FILES)

    def _root(self) -> Path:
        version = self._options["version"]
        marker = "text/train.txt" if version == "1.0" else f"{JSON_DIRS[version]}/train.json"
        return find_root(self.name, self.root, [marker, "dataset_image"], LAYOUT, FIX, nested=("data",),
                         data_dir=self.data_dir)

    def source_files(self) -> dict[str, list[Path]]:
        root = self._root()
        return {f"{d}/": sorted(root.glob(f"{d}/*.*")) for d in ("text", *JSON_DIRS.values())}

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        root = self._root()
        if self._options["version"] == "1.0":
            path = require_file(root / "text" / TXT_FILES[split], "MMSD text file", FIX)
            records = self._txt_records(path)
        else:
            path = require_file(root / JSON_DIRS[self._options["version"]] / f"{split}.json", "MMSD 2.0 file", FIX)
            records = _json_records(path)
        texts, images = [], []
        for post, text, label, error in records:
            texts.append(Item(id=post, text=text, label=label, link=post if error is None else None, error=error))
            if error is None:
                image = contained_item(root / "dataset_image", f"{post}.jpg", Item(id=post, label=label))
                if image.error is None and not Path(image.image).is_file():
                    image = dataclasses.replace(image, error=f"missing image file {image.image}")
                images.append(image)
        return Split(split, images, texts)

    def _txt_records(self, path: Path) -> list[tuple[str, str | None, int | None, str | None]]:
        """(id, text, label, error) per line of a python-literal text file."""
        out = []
        for n, raw in enumerate(read_lines(path), start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{n}"
            line, error = decode(raw, where)
            record = _literal(line, where) if error is None else (where, None, None, error)
            if self._options["keyword_filter"] and record[1] and FILTER_WORDS & set(record[1].split()):
                continue
            out.append(record)
        return out


def _literal(line: str, where: str) -> tuple[str, str | None, int | None, str | None]:
    try:
        value = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError) as exc:
        return where, None, None, f"not a python-literal list ({type(exc).__name__})"
    if not isinstance(value, list) or len(value) < 3 or not isinstance(value[1], str) or value[-1] not in (0, 1):
        return where, None, None, "expected ['<id>', '<text>', ..., <label 0/1>]"
    return str(value[0]), value[1], int(value[-1]), None


def _json_records(path: Path) -> list[tuple[str, str | None, int | None, str | None]]:
    try:
        data: Any = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not a UTF-8 JSON list of {{image_id, text, label}} ({exc})") from None
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of {{image_id, text, label}}, found {type(data)}")
    out = []
    for n, rec in enumerate(data):
        if not isinstance(rec, dict) or not {"image_id", "text", "label"} <= set(rec) or rec["label"] not in (0, 1):
            out.append((f"{path.name}[{n}]", None, None, "expected {image_id, text, label 0/1}"))
            continue
        out.append((str(rec["image_id"]), str(rec["text"]), int(rec["label"]), None))
    return out


# No direct download: `embedcache download mmsd` says where to get the texts and images.
register_source(Source("mmsd", request=(
    "get the text files from github.com/headacheboy/data-of-multimodal-sarcasm-detection (text/) or "
    "github.com/JoeYing1019/MMSD2.0 (data/text_json_final/), and the images from the link in the first "
    "repository's README"),
    layout="<dest>/text/train.txt, valid2.txt, test2.txt (or text_json_final/*.json), <dest>/dataset_image/<id>.jpg"))
