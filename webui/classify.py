"""The Classify tab: one photo in, the top-k, a Grad-CAM heatmap and a verdict in plain words out.

Every classifying event shares one queue slot and batches (`batch=True`): concurrent users share a forward pass
of the app's `model.explain.Explainer`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import gradio as gr

from model.explain import Explainer
from model.predict import Prediction
from settings import ROOT, Settings
from webui.served import ServedModel, model_problem

EXAMPLES_DIR = ROOT / "examples"
NO_IMAGE = "No image: upload a photo, take one with the webcam, or paste one from the clipboard."


def payload_source(payload: Any) -> str | bytes | None:
    """The uploaded file's path from Gradio's raw FileData (the event skips Gradio's own decoding so that the
    core's loader decodes and explains bad files), or the bytes of a `data:` URL."""
    if payload is None:
        return None
    if isinstance(payload, str):
        return payload or None
    if isinstance(payload, dict):
        if payload.get("path"):
            return str(payload["path"])
        url = payload.get("url") or ""
        if url.startswith("data:") and "," in url:
            return base64.b64decode(url.split(",", 1)[1])
    return None


def label_words(label: str) -> str:
    """A label as a visitor reads it: `red_grapefruit` -> `red grapefruit`."""
    return label.replace("_", " ")


NOT_AN_ANSWER = "Closest matches, not an answer"  # the chart's title for a photo flagged unknown


def _known(known: int, things: str) -> str:
    return f"{known} {things}" if known else things


def unknown_line(p: Prediction, known: int, things: str) -> str:
    """"This doesn't look like any of the 21 fruits I know. Nearest: kiwi." No percentage: the nearest label's
    confidence is a softmax over the known classes, so it says how that class compares with the others, not how
    sure the model is about the photo (a milk carton got "kiwi, 100%")."""
    return f"This doesn't look like any of the {_known(known, things)} I know. Nearest: {label_words(p.top_k[0][0])}."


def unknown_label(label: str, known: int, things: str) -> str:
    """An unknown answer where a label goes (the Upload tab's table and CSV): "not one of the 21 fruits I know
    (nearest: kiwi)"."""
    return f"not one of the {_known(known, things)} I know (nearest: {label_words(label)})"


def chart(value: dict | None, unknown: bool, top_k: int) -> gr.Label:
    """The page's chart of one result, as an update: the top-k under its usual title, or for a photo flagged unknown
    the same bars titled as the closest matches, without the label in large type above them (it reads as the
    answer). The API's endpoints return the plain values: gradio_client hands an update dict to its caller."""
    if unknown:
        return gr.Label(value, label=NOT_AN_ANSWER, show_heading=False)
    return gr.Label(value, label=f"Top {top_k}", show_heading=True)


def verdict(p: Prediction, uncertain_below: float, explained: bool = True, *, known: int = 0,
            things: str = "classes") -> str:
    """The verdict above the labels: unknown, not sure, or the label (`known` labels, called `things`)."""
    label, conf = p.top_k[0]
    if p.unknown:
        return (f"### Not one of the {things} I know\n{unknown_line(p, known, things)}\n\nIt may be something else "
                f"entirely. The chart lists the {len(p.top_k)} nearest {things} all the same: they are not answers, "
                f"and their bars only compare those {things} with each other.")
    if conf < uncertain_below:
        others = ", ".join(f"*{name}* {c:.0%}" for name, c in p.top_k[1:3])
        return (f"### Not sure\nThe best guess is **{label}**, but only at {conf:.0%} (below {uncertain_below:.0%}). "
                f"Next: {others}. The photo may show something the model was not trained on, several different "
                "fruits, or too little of the fruit.")
    if not explained:
        return f"### {label} ({conf:.0%})"
    return f"### {label} ({conf:.0%})\nThe heatmap shows which parts of the photo made the model say *{label}*."


def example_paths() -> list[str]:
    """One photo per class first, then the second of each: the first page of examples shows every class."""
    per_class = [sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
                 for d in sorted(EXAMPLES_DIR.iterdir()) if d.is_dir()] if EXAMPLES_DIR.is_dir() else []
    rounds = max((len(files) for files in per_class), default=0)
    return [str(files[i]) for i in range(rounds) for files in per_class if i < len(files)]


class ClassifyTab:
    """The tab's handlers, bound to one app's explainer (or the served model, switchable) and settings. `known`:
    the number of classes the verdict names, or a function giving the served bundle's."""

    def __init__(self, explainer: Explainer | ServedModel, settings: Settings, known: int | Callable[[], int]):
        self.explainer, self.settings, self.known = explainer, settings, known

    def shown(self, p: Prediction, explained: bool) -> tuple[dict | None, Any, str]:
        """(labels, heatmap, verdict) of one prediction; a batch function cannot reject one request alone, so an
        unusable image gets the core's ImageError text as its verdict."""
        if not p.ok:
            return None, None, f"**Cannot use this image:** {p.error}"
        known = self.known() if callable(self.known) else self.known
        text = verdict(p, self.settings.demo_uncertain_below, explained, known=known,
                       things=self.settings.demo_things)
        return dict(p.top_k), p.heatmap, text

    def classify(self, images: list, required: bool, explain: bool = True, page: bool = False
                 ) -> tuple[list, list, list]:
        """(labels, heatmaps, verdicts) per image; `page`: the labels as chart updates (see `chart`)."""
        sources = [payload_source(p) for p in images]
        try:
            found = iter(self.explainer.predict([s for s in sources if s is not None], self.settings.top_k, explain))
        except FileNotFoundError as exc:  # no model: every request fails the same way
            raise gr.Error(model_problem(self.explainer.model_dir) or str(exc), print_exception=False) from exc
        rows, unknown = [], []
        for s in sources:
            p = next(found) if s is not None else None
            rows.append(self.shown(p, explain) if p else (None, None, f"**{NO_IMAGE}**" if required else ""))
            unknown.append(bool(p and p.ok and p.unknown))
        labels = [r[0] for r in rows]
        if page:
            labels = [chart(value, flag, self.settings.top_k) for value, flag in zip(labels, unknown, strict=True)]
        return labels, [r[1] for r in rows], [r[2] for r in rows]

    def predict(self, images: list) -> tuple[list, list]:
        """The top-k and the verdict, without drawing a heatmap (API only)."""
        found, _, verdicts = self.classify(images, required=True, explain=False)
        return found, verdicts


def classify_tab(tab: ClassifyTab, max_batch_size: int) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Photo", type="filepath", image_mode=None, height=360,
                             sources=["upload", "webcam", "clipboard"])
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            verdict_box = gr.Markdown(elem_id="verdict")
            labels = gr.Label(label=f"Top {tab.settings.top_k}", num_top_classes=tab.settings.top_k, elem_id="labels")
            heatmap = gr.Image(label="Grad-CAM: where the model looked", format="jpeg", interactive=False, height=300)
    paths = example_paths()
    if paths:
        gr.Examples(paths, inputs=image, label="Examples (two per class; see examples/NOTICE.md for credits)",
                    examples_per_page=max(1, len(paths) // 2))
    # Every classifying event shares one queue slot ("model") and batches: concurrent users share forward passes.
    common = dict(inputs=image, batch=True, max_batch_size=max_batch_size, preprocess=False,
                  concurrency_id="model", concurrency_limit=1)
    outputs = [labels, heatmap, verdict_box]
    # The page's events retitle the chart for a photo flagged unknown; /classify (API only) gives the same values
    # plainly, as the button did before.
    button.click(lambda images: tab.classify(images, required=True, page=True), outputs=outputs,
                 api_visibility="private", **common)
    gr.on([], lambda images: tab.classify(images, required=True), outputs=outputs, api_name="classify", **common)
    # Picking an example, a webcam shot or a pasted image classifies at once; clearing the image just clears.
    image.change(lambda images: tab.classify(images, required=False, page=True), outputs=outputs,
                 api_visibility="private", **common)
    # API only (no trigger on the page): the top-k and the verdict, without drawing and storing a heatmap.
    gr.on([], tab.predict, outputs=[labels, verdict_box], api_name="predict", **common)
