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


def progress_bar(steps_per_epoch: int, epochs: int, desc: str = "train"):
    """A Keras callback: one tqdm bar over every step of every epoch, so that its ETA is the whole run's (Keras's
    own bar only knows the epoch), and a line of metrics per epoch. One callback may follow several `fit` calls
    (the phases of a run): the bar starts at the first epoch it sees, a resumed run's, and closes at the last."""
    import sys

    import keras
    from tqdm import tqdm

    class ProgressBar(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.bar is None:
                self.bar = tqdm(total=steps_per_epoch * epochs, initial=epoch * steps_per_epoch, desc=desc,
                                unit="step", file=sys.stderr, dynamic_ncols=True)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.update(max(0, (epoch + 1) * steps_per_epoch - self.bar.n))
            self.bar.write(f"epoch {epoch + 1}/{epochs}: "
                           + "  ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items()))

        def on_train_end(self, logs=None):
            if self.bar is not None and self.bar.n >= self.bar.total:
                self.bar.close()

    return ProgressBar()
