"""The staged distillation curve: `python -m train.plots --stages ...` draws consecutive runs as one curve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stages_are_numbered_on_after_each_other(tmp_path, monkeypatch):
    import matplotlib.axes

    from train import plots

    (tmp_path / "a.csv").write_text("epoch,loss,val_loss\n0,0.5,NA\n1,0.4,NA\n")
    (tmp_path / "b.csv").write_text("epoch,loss,val_loss\n0,0.45,NA\n1,0.3,NA\n2,0.2,NA\n")
    drawn = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, x, y, *a, **kw: drawn.append((list(x), list(y), kw["label"]))
                        or real_plot(ax, x, y, *a, **kw))
    plots.main(["--stages", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "loss.png")])
    assert drawn == [([1, 2], [0.5, 0.4], "stage 1"), ([3, 4, 5], [0.45, 0.3, 0.2], "stage 2")]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _pixels_of(img, hex_colour: str, tolerance: int = 40):
    """(rows, columns) of the pixels close to a colour (antialiasing blends a line's edges into the white)."""
    import numpy as np

    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return np.nonzero(np.abs(img.astype(int) - rgb).max(axis=2) <= tolerance)


def test_stages_cli_as_the_makefile_runs_it(tmp_path):
    """The PNG itself, read back: a 600x400 picture with two curves in the first two colours of the cycle, stage 1
    left of and above stage 2 (its loss was higher and its epochs came first)."""
    import numpy as np
    from PIL import Image

    (tmp_path / "a.csv").write_text("epoch,loss\n0,0.9\n1,0.8\n2,0.7\n")
    (tmp_path / "b.csv").write_text("epoch,loss\n0,0.4\n1,0.3\n2,0.2\n")
    subprocess.run([sys.executable, "-m", "train.plots", "--stages", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"),
                    "--out", str(tmp_path / "c.png")], cwd=ROOT, check=True, timeout=120)
    img = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    assert img.shape == (400, 600, 3)
    assert (img.min(axis=2) < 128).mean() > 0.01  # axes, ticks, labels and lines: not a blank page
    first, second = _pixels_of(img, "#1f77b4"), _pixels_of(img, "#ff7f0e")  # matplotlib's C0 and C1
    assert len(first[0]) > 50 and len(second[0]) > 50, (len(first[0]), len(second[0]))
    # Medians, which the legend's two short samples of the colours hardly move: stage 2's curve lies well to the
    # right (epochs 4-6, not 1-3 again) and well below (loss 0.4-0.2 against 0.9-0.7) of stage 1's.
    assert np.median(second[1]) - np.median(first[1]) > 100 and np.median(second[0]) - np.median(first[0]) > 100
