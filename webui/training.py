"""The Training tab: how the shipped model was trained (its curves, confusion matrix and metrics)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from model.card import metrics_lines, training_plots


def training_tab(model_dir: Path, card: dict) -> None:
    lines = metrics_lines(card.get("metrics") or {})
    gr.Markdown("How the shipped model was trained. " + ("\n\n" + "\n".join(lines) if lines else ""))
    found = training_plots(model_dir)
    if not any(path for path, _ in found):
        gr.Markdown(f"No training plots found next to the model (`{model_dir}`): they appear once the model's "
                    "training run has finished and its `accuracy.png`, `loss.png` and `confusion_matrix.png` "
                    "are copied into the bundle folder.")
        return
    with gr.Row():
        for path, title in found[:2]:
            if path:
                gr.Image(str(path), label=title, interactive=False, buttons=["fullscreen"])
    if found[2][0]:
        gr.Image(str(found[2][0]), label=found[2][1], interactive=False, buttons=["fullscreen"])
