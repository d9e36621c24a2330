"""Run folders and the per-epoch callbacks every training script shares (train.train, train.distill).

A run folder is new, or an existing one continued with --resume; each epoch leaves a checkpoint that --resume
continues from, a row of history.csv and its time.
"""

from __future__ import annotations

import time
from pathlib import Path

import cli


def open_run(out: str | Path, resume: bool) -> Path:
    """The run folder: new, or an existing one only with --resume, so that no run is overwritten by accident."""
    run = Path(out)
    if run.exists() and any(run.iterdir()) and not resume:
        cli.fail(f"run folder {run} is not empty: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    return run


def run_callbacks(run: Path, *extra, backup: str = "backup", append: bool = True) -> list:
    """A checkpoint every epoch in run/`backup` (what --resume continues from; kept after the run, so that
    `--resume --epochs N` can also extend a finished one), then `extra` (which may add to the epoch's logs), the
    history CSV and a stop on NaN."""
    import keras

    return [keras.callbacks.BackupAndRestore(str(run / backup), save_freq="epoch", delete_checkpoint=False), *extra,
            keras.callbacks.CSVLogger(str(run / "history.csv"), append=append), keras.callbacks.TerminateOnNaN()]


def epoch_timer(images_per_epoch: int):
    """A Keras callback recording seconds per epoch, for the printed cost of distillation."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.images_per_epoch, self.seconds, self._t0 = images_per_epoch, [], 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()
