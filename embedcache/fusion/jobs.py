"""What one training is, as values: the data (DataSpec), the optimisation (TrainCfg), where and how it runs
(RunOptions), and the registry of trainers that turn such a job into runs.

Every trainer (alignment heads, classifier heads, late-fusion weightings, the majority floor) is a `Trainer`
registered in TRAINERS by the module that defines it; `embedcache.fusion.trainers` imports them all and does
the one lookup from a head (or trainer) name, for the CLI and the pipelines alike. The configs are frozen
dataclasses of plain data: TrainCfg enters the run id exactly as before (its fields are the run's settings).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedcache.errors import BadInputError
from embedcache.fusion.settings import SETTINGS, SettingSpec
from embedcache.registry import Registry

if TYPE_CHECKING:
    from embedcache.fusion.runs import Run


# The head's compute precision -> torch dtype name (embedcache.fusion.placement: fp32 as is, bf16 autocast).
PRECISIONS: Registry[str] = Registry("precision")
PRECISIONS.register("fp32", "float32")
PRECISIONS.register("bf16", "bfloat16")
# TrainCfg fields added after run ids were pinned: in the run's settings and id only when not at their default
SINCE_PINNED = {"omit_default": True}


@dataclass(frozen=True)
class TrainCfg:
    """Optimisation settings; defaults are the CBMF authors' (batch 64, AdamW 1e-3/1e-3, plateau 5 x0.8).
    precision: 'fp32', or 'bf16' (the head's forward under bf16 autocast; recorded in the run id when set)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    plateau_patience: int = 5
    plateau_factor: float = 0.8
    early_stop_patience: int = 5
    seed: int = 0
    drop_last: bool = True  # a ragged last batch of a few items is a poor contrastive step
    precision: str = field(default="fp32", metadata=SINCE_PINNED)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS.names())}",
                                fix="pass --precision fp32 or --precision bf16")
        if not (self.lr >= 0 and math.isfinite(self.lr)) or self.weight_decay < 0 or self.epochs < 1:
            raise BadInputError(f"training needs a finite --lr >= 0 (found {self.lr}), weight decay >= 0 (found "
                                f"{self.weight_decay}) and --epochs >= 1 (found {self.epochs})",
                                fix="pass --lr, --epochs with valid values")


@dataclass(frozen=True)
class DataSpec:
    """Which stores a training reads and how: unset dataset/backbones/pairing/threshold come from the setting
    (default: the head's). tokens None: token sequences when the stores hold them (a classifier head: its own
    wish). val_split None: the trainer's default ("val"; classifiers: the first of val/valid/validation/dev);
    absent from the stores: `val_fraction` of the training groups is held out. Token arrays above
    `ram_budget` bytes (default: a share of the free RAM) are streamed from the store in blocks."""

    setting: str | None = None
    dataset: str | None = None
    backbones: tuple[str, ...] = ()
    pairing: str | None = None
    threshold: float | None = None
    tokens: bool | None = None
    train_split: str = "train"
    val_split: str | None = None
    test_split: str | None = "test"
    val_fraction: float = 0.1
    ram_budget: int | None = None
    miner: str | None = None  # pairing 'mined': the store the pairs are mined from (None: the setting's, MiniLM)
    mining: Mapping[str, Any] | None = None  # embedcache.fusion.mining options: scope, top_k, self_pairs

    def resolve(self, default_setting: str) -> tuple[SettingSpec, DataSpec]:
        """The setting used and this spec with dataset, backbones, pairing and threshold filled from it."""
        st = SETTINGS.get(self.setting or default_setting)
        return st, dataclasses.replace(
            self, dataset=self.dataset or st.dataset, backbones=tuple(self.backbones or st.backbones),
            pairing=self.pairing or st.pairing, threshold=st.threshold if self.threshold is None else self.threshold)


@dataclass(frozen=True)
class RunOptions:
    """Where a training reads and writes and how it shows itself: the data dir (stores, mined pairs; None:
    $EMBEDCACHE_DATA_DIR or ./data), the runs dir (None: <results>/runs), the device (None: cuda if available),
    a progress bar, and `force` (train again even when the same run exists). How it runs, without changing what
    it computes (so not in the run id): `stores` on a GPU ('auto': on the device once when they fit its free
    memory, else host memory with pinned minibatch copies; 'device'; 'host'), `compile` (torch.compile the
    head's loss)."""

    data_dir: Path | None = None
    runs_root: Path | None = None
    device: str | None = None
    progress: bool = True
    force: bool = False
    stores: str = "auto"
    compile: bool = False


@dataclass(frozen=True)
class TrainJob:
    """One training: the head (or late-fusion method, or trainer) name, its data, optimisation and run options,
    and the trainer's options (a head's options and `targets`; late fusion: methods, heads, score, ...)."""

    head: str
    data: DataSpec = DataSpec()
    cfg: TrainCfg = TrainCfg()
    run: RunOptions = RunOptions()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trainer:
    """A registered trainer: `fit` turns a job into runs ({sub name: Run}; "" for a single run); `names` lists
    the heads (or methods) it trains, `default_setting` and `describe` what `embedcache heads` shows of each."""

    name: str
    fit: Callable[[TrainJob], dict[str, Run]]
    names: Callable[[], list[str]]
    default_setting: Callable[[str], str | None]
    describe: Callable[[str], str] = lambda name: ""

    def serves(self, name: str) -> bool:
        """Whether this trainer trains `name` (one of its heads or methods, or its own name)."""
        return name == self.name or name in self.names()


TRAINERS: Registry[Trainer] = Registry("trainer")

_CONFIGS = {"data": DataSpec, "cfg": TrainCfg, "run": RunOptions}


def job_from(head: str, settings: Mapping[str, Any]) -> TrainJob:
    """A TrainJob from one flat mapping (a pipeline's `train` table, or keyword arguments): each key goes to the
    config with a field of that name (DataSpec, TrainCfg, RunOptions); `options` and every other key are the
    trainer's options (a head's options, `targets`; late fusion's methods, heads, score, priors, normalise)."""
    parts: dict[str, dict[str, Any]] = {k: {} for k in _CONFIGS}
    options = dict(settings.get("options") or {})
    for key, value in settings.items():
        where = next((k for k, cls in _CONFIGS.items() if key in {f.name for f in fields(cls)}), None)
        if where is not None:
            parts[where][key] = tuple(value) if key == "backbones" and value is not None else value
        elif key != "options":
            options[key] = value
    if parts["data"].get("backbones") is None:
        parts["data"].pop("backbones", None)
    return TrainJob(head, **{k: cls(**parts[k]) for k, cls in _CONFIGS.items()}, options=options)
