"""The majority-class floor of a classification table, as a registered trainer (`majority`).

It predicts the commonest TRAINING class for every test row (multi-label: every category present in at least
half the training items) and scores that like the classifiers, so a table shows what a model that ignores
its input gets. Nothing is trained; the run is one JSON whose id hashes the store fingerprints and splits.
"""

from __future__ import annotations

import numpy as np

from embedcache.fusion.classify import evaluate_probs, label_info, load_labelled
from embedcache.fusion.jobs import TRAINERS, Trainer, TrainJob
from embedcache.fusion.late_fusion import class_priors
from embedcache.fusion.runs import Run, find_run, make_run_id, runs_dir, write_record
from embedcache.fusion.train import check_stores, run_inputs


def majority_probs(labels: np.ndarray, kind: str, num_classes: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The class prior of training labels ((N,) single or (N, C) multi) and the (rows, C) floor prediction."""
    prior = class_priors(labels, num_classes) if kind == "single" else labels.mean(axis=0)
    guess = np.eye(num_classes)[prior.argmax()] if kind == "single" else (prior >= 0.5).astype(np.float64)
    return prior, np.tile(guess, (rows, 1))  # the same prediction for every row


def fit_majority(job: TrainJob) -> dict[str, Run]:
    """The majority floor on the stores of `job.data` (dataset and backbones as given): {"": Run}."""
    data, root = job.data, runs_dir(job.run.runs_root)
    opts = {"train_split": data.train_split, "test_split": data.test_split}
    paths = check_stores("majority", data.dataset, tuple(data.backbones), job.run.data_dir, None)
    train = load_labelled(paths, data.train_split)
    inputs = run_inputs(train)
    run_id = make_run_id("majority", {"inputs": [i["fingerprint"] for i in inputs], "options": opts})
    if not job.run.force and (found := find_run(run_id, root)) is not None:
        return {"": found}
    test = load_labelled(paths, data.test_split)
    kind, classes = label_info(train)
    prior, probs = majority_probs(train.labels.numpy(), kind, len(classes), len(test))
    record = {"run_id": run_id, "task": "majority", "head": {"name": "majority"}, "seed": job.cfg.seed,
              "inputs": inputs, "data": {**opts, "train_rows": len(train), "test_rows": len(test)},
              "classes": classes, "label_kind": kind, "prior": prior.tolist(),
              "metrics": {"test": evaluate_probs(probs, test.labels.numpy(), kind, classes)}}
    return {"": write_record(record, root)}


TRAINERS.register("majority", Trainer("majority", fit_majority, lambda: ["majority"], lambda name: None,
                                      lambda name: "the majority-class floor: the commonest training class for all"))
