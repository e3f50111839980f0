"""meta.json's first record of a training process: what runs, where, on what data, with which
execution settings. Written by the trainer when it claims the run directory (runs.py owns the
file and its later updates)."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import tensorflow as tf

from dlintro import runs
from dlintro.data import data_root
from dlintro.onednn import current as onednn_switch


def describe(trainer: Any, command: list[str] | None) -> dict[str, Any]:
    """meta.json's fields for a built Trainer's process: what runs, where, and on what data."""
    b, cfg = trainer.bundle, trainer.cfg
    return {
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "name": cfg.name,
        "command": command if command is not None else sys.argv,
        "started": runs.now(),
        "seed": cfg.seed,
        "versions": runs.versions(),
        "machine": runs.machine(),
        "data": {
            "dataset": b.info.name,
            # the data directory it read: `dlintro eval` finds the test set there later
            "root": str(data_root(trainer.data_dir).resolve()),
            "num_train": b.num_train,
            "num_validation": b.num_validation,
            "num_test": b.num_test,
            "input_shape": list(b.info.input_shape),
            "class_names": list(b.info.class_names),
            "normalization": b.normalization,
            **b.info.skipped_record(),  # image folders, on_error: skip: count, first paths
        },
        "plan": {
            "total_steps": trainer.total_steps,
            "epochs": trainer.epochs,
            "steps_per_epoch": b.steps_per_epoch,
            "batch_size": cfg.data.batch_size,
            "steps_per_execution": trainer.run_cfg.train.steps_per_execution,
            "jit_compile": trainer.run_cfg.train.jit_compile,
            "precision": trainer.run_cfg.train.precision,
        },
        "execution": trainer.decision.to_dict(),
        "onednn": onednn_switch().to_dict(),
        "model": {"name": cfg.model.name, "params": int(trainer.net.count_params())},
        "distribution": {
            "strategy": type(trainer.strategy).__name__,
            "devices": list(trainer.strategy.extended.worker_devices)
            if trainer.distributed
            else [d.name for d in tf.config.list_logical_devices()[:1]],
            **trainer.plan.to_dict(),
        },
    }
