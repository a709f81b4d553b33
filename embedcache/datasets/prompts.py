"""`class-prompts`: zero-shot prompts as a dataset, so the text side of a zero-shot evaluation is a store.

One text item per (class, template) of another dataset's classes; the label is the class index and the
only split is `prompts`. Extract it with the text backbone into `<dataset>-prompts` (`--name`), which the
zero-shot task reads:

    embedcache extract class-prompts --model minilm --name shapes-prompts -o of=shapes
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedcache.datasets import DATASETS, create_dataset
from embedcache.datasets.base import Dataset, Item, Split
from embedcache.errors import BadInputError


@DATASETS.register("class-prompts")
class ClassPrompts(Dataset):
    """Zero-shot prompts: one text item per (class, template) of another dataset's classes, label = the class
    index; split `prompts`. Extracted like any dataset into the store `<dataset>-prompts` that the zero-shot
    task reads. `root` is the source dataset's root (its class names may live in its files, e.g. CIFAR)."""

    name = "class-prompts"
    origin = "derived"
    version = "1"
    modalities = ("text",)
    label_kind = "single"

    def __init__(self, root: str | Path | None = None, *, of: str = "shapes",
                 templates: tuple[str, ...] | list[str] = ("a photo of a {}",),
                 of_options: dict[str, Any] | None = None) -> None:
        super().__init__(root, of=of, templates=list(templates), of_options=dict(of_options or {}))

    @property
    def classes(self) -> tuple[str, ...]:
        o = self._options
        return tuple(create_dataset(o["of"], root=self.root, data_dir=self.data_dir, **o["of_options"]).classes)

    def splits(self) -> list[str]:
        return ["prompts"]

    def load_split(self, split: str) -> Split:
        if split != "prompts":
            raise BadInputError(f"class-prompts has one split, 'prompts'; got {split!r}")
        templates = self._options["templates"]
        texts = [Item(id=f"{c:04d}-{k}", text=t.format(name), label=c)
                 for c, name in enumerate(self.classes) for k, t in enumerate(templates)]
        return Split("prompts", texts=texts)
