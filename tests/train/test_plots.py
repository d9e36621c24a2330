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


def test_stages_cli_as_the_makefile_runs_it(tmp_path):
    (tmp_path / "h.csv").write_text("epoch,loss\n0,0.5\n")
    subprocess.run([sys.executable, "-m", "train.plots", "--stages", str(tmp_path / "h.csv"), "--out",
                    str(tmp_path / "c.png")], cwd=ROOT, check=True, timeout=120)
    assert (tmp_path / "c.png").stat().st_size > 1000
