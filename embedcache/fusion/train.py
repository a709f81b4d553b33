"""Stage two training: any registered head, from stores held in RAM (or on the GPU), into one run.

`fit` is the generic loop: the head supplies its loss for a batch; an epoch is a seeded permutation of the
pair rows sliced into minibatches (no per-item Dataset/DataLoader); AdamW, ReduceLROnPlateau and early
stopping on the validation loss with the CBMF authors' defaults; the best epoch's weights are kept.
`fit_alignment`, the registered trainer of alignment heads (`align`, see embedcache.fusion.jobs), resolves a
head's default setting (stores, pairing), loads and joins the stores by id, calls `fit` and writes the run
(embedcache.fusion.runs). Stage two never imports transformers or timm.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache.devices import resolve_device
from embedcache.errors import BadInputError, UserError
from embedcache.fingerprint import to_plain
from embedcache.fusion.heads import HEADS, Batch, Head, HeadSpec, create_head
from embedcache.fusion.jobs import TRAINERS, DataSpec, TrainCfg, Trainer, TrainJob
from embedcache.fusion.pairings import join
from embedcache.fusion.placement import loss_fn, place
from embedcache.fusion.runs import Run, find_run, make_run_id, save_run
from embedcache.fusion.settings import SETTINGS, SettingSpec
from embedcache.fusion.views import Epoch, PairData, load_view
from embedcache.paths import store_path
from embedcache.store import open_store

LossFn = Callable[[Batch], torch.Tensor]

__all__ = ["SETTINGS", "FitResult", "SettingSpec", "StoresMissingError", "TrainCfg", "fit", "fit_alignment"]


@dataclass
class FitResult:
    """What `fit` did: per-epoch history, the best epoch (whose weights the head now holds) and timings."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    train_seconds: float = 0.0


class StoresMissingError(UserError, FileNotFoundError):
    """The stores a training needs do not exist; the message and `fix` give the extract commands that make them."""

    def __init__(self, head: str, missing: Mapping[Path, str], where: str = "") -> None:
        lines = "\n".join(f"  {cmd}" for cmd in missing.values())
        super().__init__(f"`embedcache train {head}` needs the stores {', '.join(str(p) for p in missing)}{where}; "
                         f"make them with:\n{lines}", fix="; ".join(missing.values()))


# The most minibatches an epoch (and a validation pass) runs; None: all. Set only by `step_cap` (the rehearsal,
# which caps training at the papers' real row counts on a CPU); runs record it in their history.
_STEP_CAP: ContextVar[int | None] = ContextVar("step_cap", default=None)


@contextmanager
def step_cap(steps: int | None) -> Iterator[None]:
    """Within the block, every training epoch and validation pass stops after `steps` minibatches."""
    token = _STEP_CAP.set(steps)
    try:
        yield
    finally:
        _STEP_CAP.reset(token)


def capped_rows(rows: int, batch_size: int) -> int:
    """`rows`, or the rows of `step_cap` minibatches when a cap is set (for loops outside `fit`: fine-tuning)."""
    cap = _STEP_CAP.get()
    return rows if cap is None else min(rows, cap * batch_size)


# ---------------------------------------------------------------- the loop


def evaluate_loss(head: Head, data: PairData, batch_size: int, seed: int = 0,
                  loss: LossFn | None = None) -> float:
    """Mean loss over `data` in a fixed (seeded) order, eval mode, no gradients; weighted by batch size.
    loss: the head's loss as `fit` runs it (placement.loss_fn: precision, compile); default head.loss."""
    head.eval()
    loss = loss or head.loss
    total, count = torch.zeros(()), 0  # becomes a tensor on the loss's device with the first batch
    with torch.no_grad():
        for idx in islice(data.epoch(batch_size, torch.Generator().manual_seed(seed)), _STEP_CAP.get()):
            total = total + loss(data.batch(idx)).float() * len(idx)
            count += len(idx)
    return float(total) / max(1, count)


def _train_epoch(head: Head, data: PairData, batches: Epoch, opt: torch.optim.Optimizer, display: Any,
                 loss_of: LossFn) -> float:
    head.train()
    total, count = torch.zeros(()), 0
    for step, idx in enumerate(islice(batches, _STEP_CAP.get())):
        loss = loss_of(data.batch(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total = total + loss.detach().float() * len(idx)  # no .item() per step: it would sync the GPU every batch
        count += len(idx)
        display.step(step + 1, total, count)
    return float(total) / max(1, count)


def fit(head: Head, train: PairData, val: PairData, cfg: TrainCfg = TrainCfg(), *, progress: bool = False,
        compile: bool = False) -> FitResult:
    """Train `head` in place on `train`, early-stopping on `val` loss; the head ends with its best weights.
    Its loss runs in `cfg.precision` (bf16: autocast) and, with `compile`, through torch.compile."""
    if len(train) == 0 or len(val) == 0:
        raise BadInputError(f"training needs rows in both sets; found {len(train)} training and {len(val)} validation "
                            "rows: check the splits and the pairing")
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in head.parameters() if p.requires_grad]
    # fused: one kernel for the whole update, on the CPU as on the GPU (same AdamW arithmetic)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=bool(params) or None)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    result, best_state, bad = FitResult(), copy.deepcopy(head.state_dict()), 0
    loss_of = loss_fn(head, cfg.precision, compile)
    start = time.perf_counter()
    with _Display(progress, cfg.epochs) as display:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            batches = train.epoch(cfg.batch_size, gen, cfg.drop_last)
            display.start_epoch(epoch, len(batches))
            lr = opt.param_groups[0]["lr"]  # the rate this epoch trained with (the scheduler may lower it below)
            train_loss = _train_epoch(head, train, batches, opt, display, loss_of)
            val_loss = evaluate_loss(head, val, cfg.batch_size, cfg.seed, loss_of)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):  # NaN in a store, or a diverging lr
                raise BadInputError(f"epoch {epoch}: the loss is not finite (train {train_loss}, val {val_loss}); "
                                    "nothing was saved", fix="check the stores with `embedcache verify`, or lower --lr")
            sched.step(val_loss)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                   "seconds": seconds, "items_per_s": len(train) / seconds, **head.log_values(),
                   **({"step_cap": _STEP_CAP.get()} if _STEP_CAP.get() else {})}
            result.history.append(row)
            display.end_epoch(row)
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch, bad = val_loss, epoch, 0
                best_state = copy.deepcopy(head.state_dict())
            else:
                bad += 1
                if bad >= cfg.early_stop_patience:
                    result.stopped_early = True
                    break
    head.load_state_dict(best_state)
    result.train_seconds = time.perf_counter() - start
    return result


class _Display:
    """A rich progress bar (epoch, batch, train/val loss, logit scale, items/s) on stderr; inert if disabled."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled, self.epochs, self.steps = enabled, epochs, 0
        self._last = 0.0

    def __enter__(self) -> _Display:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)
            self.bars.__enter__()
            self.task = self.bars.add_task("epoch", total=None, info="")
        return self

    def start_epoch(self, epoch: int, steps: int) -> None:
        self._t0, self.steps = time.perf_counter(), steps
        if self.enabled:
            self.bars.reset(self.task, total=self.steps, description=f"epoch {epoch}/{self.epochs}", info="")

    def step(self, step: int, total: torch.Tensor, count: int) -> None:
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.2 or step == self.steps):  # refresh 5x/s, not every batch
            self._last = now
            rate = count / max(now - self._t0, 1e-9)
            self.bars.update(self.task, completed=step, info=f"loss {float(total) / count:.4f}  {rate:,.0f} items/s")

    def end_epoch(self, row: dict[str, float]) -> None:
        if self.enabled:
            extra = "  ".join(f"{k} {v:.3g}" for k, v in row.items() if k not in ("epoch", "seconds"))
            self.bars.console.print(f"epoch {int(row['epoch'])}: {extra}")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bars.__exit__(*exc)


# ---------------------------------------------------------------- from stores to a run


def extract_command(dataset: str, backbone: str, *, tokens: bool = False, data_dir: str | Path | None = None) -> str:
    """The `embedcache extract` command line that makes the store of (dataset, backbone)."""
    extra = (" --tokens" if tokens else "") + (f" --data-dir {data_dir}" if data_dir else "")
    return f"embedcache extract {dataset} --model {backbone}{extra}"


def check_stores(head: str, dataset: str, backbones: tuple[str, ...], data_dir: str | Path | None,
                 tokens: bool | None) -> list[Path]:
    """The store paths of (dataset, backbone); raise StoresMissingError with the extract commands if any is missing."""
    paths = [store_path(dataset, b, data_dir) for b in backbones]
    missing = {p: extract_command(dataset, b, tokens=bool(tokens), data_dir=data_dir)
               for b, p in zip(backbones, paths, strict=True) if not p.exists()}
    if missing:
        raise StoresMissingError(head, missing, f" (dataset {dataset!r}, backbones {', '.join(backbones)})")
    return paths


def load_pairs_data(paths: list[Path], split: str, data: DataSpec, miner_path: Path | None,
                    data_dir: str | Path | None) -> tuple[PairData, dict[str, Any]]:
    """Load the split of every store and join them by `data.pairing`; for pairing 'mined' mine (or reuse) the
    caption pairs of the store at `miner_path` (`data.mining`: scope 'image' (default) or 'topk', top_k,
    self_pairs; embedcache.fusion.mining). Token arrays above `data.ram_budget` bytes are streamed."""
    views = [load_view(p, split, tokens=data.tokens, ram_budget=data.ram_budget) for p in paths]
    info: dict[str, Any] = {"pairing": data.pairing, "split": split}
    if data.pairing == "mined":
        from embedcache.fusion.mining import ensure_pairs

        miner_path = miner_path or paths[0]
        opts = {"scope": "image", "top_k": None, "self_pairs": True, **(data.mining or {})}
        mined = ensure_pairs(miner_path, split, data.threshold, scope=opts["scope"], top_k=opts["top_k"],
                             data_dir=data_dir)
        a, b = mined.training_pairs(opts["self_pairs"])
        joined = join(views, "table", a_ids=a, b_ids=b)
        info.update(pairs_file=str(mined.path), pairs_fingerprint=mined.fingerprint, threshold=data.threshold,
                    mined_pairs=len(mined), miner=str(miner_path), **opts)
    else:
        joined = join(views, data.pairing)
    info.update(rows=len(joined), dropped=joined.dropped)
    return joined, info


def holdout(data: PairData, fraction: float, seed: int) -> tuple[PairData, PairData]:
    """Split rows into train/val by whole groups (the column with fewest distinct items, e.g. the image), so
    no image has captions on both sides."""
    col = min(range(data.rows.shape[1]), key=lambda m: len(torch.unique(data.rows[:, m])))
    groups = torch.unique(data.rows[:, col])
    perm = groups[torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))]
    val_groups = perm[: max(1, int(len(groups) * fraction))]
    is_val = torch.isin(data.rows[:, col], val_groups)
    return data.subset(torch.nonzero(~is_val).squeeze(1)), data.subset(torch.nonzero(is_val).squeeze(1))


def run_inputs(data: PairData) -> list[dict[str, Any]]:
    """The run record's description of each input store."""
    return [{"path": v.path, "dataset": v.attrs.get("dataset", ""), "backbone": v.attrs.get("backbone", ""),
             "modality": v.attrs.get("modality", ""), "fingerprint": v.fingerprint, "tokens": v.uses_tokens,
             "dim": v.dim, "streamed_window_bytes": v.stream.window_bytes if v.stream else 0} for v in data.views]


def inputs_key(data: PairData) -> list[tuple[Any, ...]]:
    """What of the inputs makes a run: store fingerprints, tokens or not, and streaming (it changes the batches)."""
    return [(i["fingerprint"], i["tokens"], *(["streamed"] if i["streamed_window_bytes"] else []))
            for i in run_inputs(data)]


def find_or_seed(head: str, key: dict[str, Any], *, seed: int, force: bool, runs_root: str | Path | None
                 ) -> tuple[str, Run | None]:
    """The id of the run with inputs `key`, and that finished run unless `force`; when there is none to reuse,
    torch and numpy are seeded for training it."""
    run_id = make_run_id(head, key)
    done = None if force else find_run(run_id, runs_root)
    if done is None:
        torch.manual_seed(seed)
        np.random.seed(seed)
    return run_id, done


def say_streamed(*datas: PairData) -> None:
    """Tell (on stderr) which token stores are streamed because they do not fit in RAM."""
    for note in sorted({v.stream.describe() for d in datas for v in d.views if v.stream is not None}):
        say(f"{note}; minibatches are shuffled within blocks and the block order each epoch",
            "tokens larger than the RAM budget")


def say(note: str, label: str = "note") -> None:
    """A one-line note on stderr (nothing when empty)."""
    if note:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]{label}:[/] {note}")


def store_splits(path: Path) -> list[str]:
    """The split names the store at `path` holds."""
    with open_store(path) as store:
        return list(store.splits)


def _align_data(job: TrainJob, data: DataSpec, miner: str | None) -> tuple[PairData, PairData, list[Any]]:
    """Train and validation rows of an alignment job (validation held out when the stores lack the split), and
    their descriptions [train_info, val_info]."""
    paths = check_stores(job.head, data.dataset, data.backbones, job.run.data_dir, data.tokens)
    miner_path = None
    if data.pairing == "mined":  # the miner need not be an input (the paper: MiniLM pairs, BERT x RoBERTa trained)
        miner_name = data.miner or miner or data.backbones[0]
        miner_path = check_stores(job.head, data.dataset, (miner_name,), job.run.data_dir, False)[0]
    train_data, train_info = load_pairs_data(paths, data.train_split, data, miner_path, job.run.data_dir)
    val_split = data.val_split or "val"
    if all(val_split in store_splits(p) for p in paths):
        val_data, val_info = load_pairs_data(paths, val_split, data, miner_path, job.run.data_dir)
    else:
        train_data, val_data = holdout(train_data, data.val_fraction, job.cfg.seed)
        val_info = {"held_out_from": data.train_split, "fraction": data.val_fraction, "rows": len(val_data)}
    return train_data, val_data, [train_info, val_info]


def fit_alignment(job: TrainJob) -> dict[str, Run]:
    """Train the registered alignment head `job.head` from stores and write its run: {"": Run}.

    Unset data fields come from the head's default setting (SETTINGS; `cbmf-add`: text-image on `shapes`,
    effnet-lite0 + minilm); `job.options` are head options (`targets`: 'hard'/'soft'). The run id hashes the
    head spec, TrainCfg, store fingerprints, pairing and splits: an identical finished run is returned without
    retraining unless `job.run.force`.
    """
    st, data = job.data.resolve(HEADS.get(job.head).setting_for(job.head))
    t0 = time.perf_counter()
    train_data, val_data, infos = _align_data(job, data, st.miner)
    load_seconds = time.perf_counter() - t0
    spec = HeadSpec.create(job.head, [v.dim for v in train_data.views],
                           [v.attrs.get("modality", "") for v in train_data.views], **job.options)
    key = {"head": spec, "train": job.cfg, "inputs": inputs_key(train_data),
           "pairs": infos, "splits": [data.train_split, data.val_split or "val"]}
    if HEADS.get(job.head).revision:  # the head's default computation changed: never reuse a run of the old one
        key["revision"] = HEADS.get(job.head).revision
    run_id, done = find_or_seed(job.head, key, seed=job.cfg.seed, force=job.run.force, runs_root=job.run.runs_root)
    if done is not None:
        return {"": done}
    dev = resolve_device(job.run.device)
    model = create_head(spec).to(dev)
    note = place(train_data, val_data, dev, job.run.stores)
    say(note)
    if job.run.progress:
        say_streamed(train_data, val_data)
    result = fit(model, train_data, val_data, job.cfg, progress=job.run.progress, compile=job.run.compile)
    record = {
        "run_id": run_id, "head": spec, "head_cfg": asdict(model.cfg), "train": job.cfg, "seed": job.cfg.seed,
        "setting": {"name": st.name, "dataset": data.dataset, "backbones": data.backbones, "pairing": data.pairing},
        "inputs": run_inputs(train_data), "pairs": {"train": infos[0], "val": infos[1]}, "device": str(dev),
        "parameters": sum(p.numel() for p in model.parameters()), "history": result.history,
        "metrics": {"train": fit_summary(result)}, "timings": {"load_s": load_seconds, **fit_timings(result)},
    }
    return {"": save_run(to_plain(record), model, job.run.runs_root)}


def fit_summary(result: FitResult) -> dict[str, float]:
    """The run record's training summary of one `fit`."""
    return {"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "stopped_early": float(result.stopped_early)}


def fit_timings(result: FitResult) -> dict[str, float]:
    """Training time, mean epoch time and mean throughput of one `fit`."""
    return {"train_s": result.train_seconds,
            "epoch_s_mean": float(np.mean([h["seconds"] for h in result.history])),
            "items_per_s_mean": float(np.mean([h["items_per_s"] for h in result.history]))}


def _alignment_heads() -> list[str]:
    return [n for n in HEADS.names() if getattr(HEADS.get(n), "task", "align") == "align"]


def head_doc(name: str) -> str:
    """The first line of a registered head's docstring."""
    doc = (HEADS.get(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


TRAINERS.register("align", Trainer("align", fit_alignment, _alignment_heads,
                                   lambda name: HEADS.get(name).setting_for(name), head_doc))
