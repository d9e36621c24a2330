"""The Gradio demo: classify a photo (top-5 and a Grad-CAM heatmap), run folder jobs, see how the model was trained.

    python demo.py [--model BUNDLE] [--share] [--auth user:pass] [--host HOST] [--port PORT] [--max-batch-size N]

`build_demo()` reads the settings and the bundle's small JSON files: no model load, no TensorFlow import and no
network I/O, so tests and Hugging Face Spaces can build it; `demo.demo` builds the configured app on first access.
The Batch tab also reviews a job's results (`webui.review`) and compares two jobs (`webui.compare`).
The classifier loads once per process: at launch, or on the first request. Classification is batched
(`batch=True`, bounded `max_batch_size`): concurrent users share one forward pass (`model.explain`).
"""

from __future__ import annotations

import argparse
import base64
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from model.bundle import read_card
from model.card import card_markdown, metrics_lines, training_plots
from model.explain import Explainer
from model.predict import Prediction
from settings import ROOT, Settings, get_settings
from webui.batch import BatchTab, batch_tab
from webui.compare import CompareView, compare_view
from webui.review import ReviewView, review_view

EXAMPLES_DIR = ROOT / "examples"
NO_IMAGE = "No image: upload a photo, take one with the webcam, or paste one from the clipboard."


# -- Classify tab -------------------------------------------------------------------------------------------------

def model_problem(model_dir: Path) -> str | None:
    """Why the bundle cannot be used, or None when it looks complete (checked without loading it)."""
    if not (model_dir / "config.json").is_file() or not (model_dir / "model.keras").is_file():
        return (f"No model bundle at `{model_dir}` (it needs `config.json` and `model.keras`). "
                "The shipped fruit model may not be trained yet: run `make train-fruits` and copy its `bundle/` "
                "there, or start the demo with `--model PATH`.")
    return None


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


def verdict(top: list[tuple[str, float]], uncertain_below: float, explained: bool = True) -> str:
    label, conf = top[0]
    if conf < uncertain_below:
        others = ", ".join(f"*{name}* {c:.0%}" for name, c in top[1:3])
        return (f"### Not sure\nThe best guess is **{label}**, but only at {conf:.0%} (below {uncertain_below:.0%}). "
                f"Next: {others}. The photo may show something the model was not trained on, several different "
                "fruits, or too little of the fruit.")
    if not explained:
        return f"### {label} ({conf:.0%})"
    return f"### {label} ({conf:.0%})\nThe heatmap shows which parts of the photo made the model say *{label}*."


def shown(p: Prediction, uncertain_below: float, explained: bool) -> tuple[dict | None, Any, str]:
    """(labels, heatmap, verdict) of one prediction; a batch function cannot reject one request alone, so an
    unusable image gets the core's ImageError text as its verdict."""
    if not p.ok:
        return None, None, f"**Cannot use this image:** {p.error}"
    return dict(p.top_k), p.heatmap, verdict(p.top_k, uncertain_below, explained)


def example_paths() -> list[str]:
    """One photo per class first, then the second of each: the first page of examples shows every class."""
    per_class = [sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
                 for d in sorted(EXAMPLES_DIR.iterdir()) if d.is_dir()] if EXAMPLES_DIR.is_dir() else []
    rounds = max((len(files) for files in per_class), default=0)
    return [str(files[i]) for i in range(rounds) for files in per_class if i < len(files)]


def classify_tab(explainer: Explainer, settings: Settings, max_batch_size: int) -> None:
    def classify(images: list, required: bool, explain: bool = True) -> tuple[list, list, list]:
        sources = [payload_source(p) for p in images]
        try:
            found = iter(explainer.predict([s for s in sources if s is not None], settings.top_k, explain))
        except FileNotFoundError as exc:  # no model: every request fails the same way
            raise gr.Error(model_problem(explainer.model_dir) or str(exc), print_exception=False) from exc
        rows = [shown(next(found), settings.demo_uncertain_below, explain) if s is not None
                else (None, None, f"**{NO_IMAGE}**" if required else "") for s in sources]
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Photo", type="filepath", image_mode=None, height=360,
                             sources=["upload", "webcam", "clipboard"])
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            verdict_box = gr.Markdown(elem_id="verdict")
            labels = gr.Label(label="Top 5", num_top_classes=settings.top_k, elem_id="labels")
            heatmap = gr.Image(label="Grad-CAM: where the model looked", format="jpeg", interactive=False, height=300)
    paths = example_paths()
    if paths:
        gr.Examples(paths, inputs=image, label="Examples (two per class; see examples/NOTICE.md for credits)",
                    examples_per_page=max(1, len(paths) // 2))
    # Every classifying event shares one queue slot ("model") and batches: concurrent users share forward passes.
    common = dict(inputs=image, batch=True, max_batch_size=max_batch_size, preprocess=False,
                  concurrency_id="model", concurrency_limit=1)
    outputs = [labels, heatmap, verdict_box]
    button.click(lambda images: classify(images, required=True), outputs=outputs, api_name="classify", **common)
    # Picking an example, a webcam shot or a pasted image classifies at once; clearing the image just clears.
    image.change(lambda images: classify(images, required=False), outputs=outputs, api_visibility="private",
                 **common)

    # API only (no trigger on the page): the top-k and the verdict, without drawing and storing a heatmap.
    def predict(images: list) -> tuple[list, list]:
        found, _, verdicts = classify(images, required=True, explain=False)
        return found, verdicts

    gr.on([], predict, outputs=[labels, verdict_box], api_name="predict", **common)


# -- Training tab and the app ---------------------------------------------------------------------------------------

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


def build_demo(model_dir: str | os.PathLike | None = None, max_batch_size: int | None = None, *,
               settings: Settings | None = None, load: bool = False) -> gr.Blocks:
    """The whole app for one bundle. The network loads on the first request, or here with `load` (a server
    start: no user waits for it); a missing bundle gives a page that says so, not a traceback."""
    settings = settings or get_settings()
    model_dir = Path(model_dir or settings.model_dir)
    explainer = Explainer(model_dir, **settings.classifier_options())
    problem = model_problem(model_dir)
    if load and not problem:
        explainer.load()
    with gr.Blocks(title="DenseNet121 fruit classifier") as app:
        gr.Markdown("# DenseNet121 fruit classifier\nDrop in a photo of a fruit: the model names it, says how sure "
                    "it is, and shows which pixels drove its answer.")
        with gr.Tab("Classify"):
            classify_tab(explainer, settings, max_batch_size or settings.demo_max_batch_size)
            card = f"### Model\n**The model is not available.** {problem}" if problem else card_markdown(model_dir)
            gr.Markdown(card, elem_id="model-card")
        with gr.Tab("Batch"):
            batch_tab(BatchTab(model_dir, settings), views=[functools.partial(review_view, ReviewView(settings)),
                                                            functools.partial(compare_view, CompareView(settings))])
        with gr.Tab("Training"):
            training_tab(model_dir, read_card(model_dir))
    return app


@functools.cache
def _configured_app() -> gr.Blocks:
    return build_demo()


def __getattr__(name: str) -> Any:
    # `demo.demo`, the module-level app Gradio's tools look for: built on first access, not at import.
    if name == "demo":
        return _configured_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- command line ---------------------------------------------------------------------------------------------------

def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth / DEMO_AUTH must look like user:password")
    return user, password


def parse_args(settings: Settings, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=settings.model_dir, help="model bundle folder (default: settings.model_dir)")
    p.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    p.add_argument("--auth", default=settings.demo_auth, help="user:password (default: env DEMO_AUTH)")
    # Hugging Face Spaces set GRADIO_SERVER_NAME/PORT; an explicit default here would override them.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or settings.demo_host)
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or settings.demo_port))
    p.add_argument("--max-batch-size", type=int, default=settings.demo_max_batch_size,
                   help="requests that share one forward pass (1 = no batching)")
    return p.parse_args(argv)


def launch(app: gr.Blocks, settings: Settings | None = None, **options: Any) -> Any:
    """Queue and serve `app` with the settings' limits (queue size, upload size, sessions kept); `options` go to
    `Blocks.launch` (host, port, share, auth...). The tests serve the app through this too."""
    settings = settings or get_settings()
    return app.queue(max_size=settings.demo_queue_size).launch(
        max_file_size=settings.demo_max_file_size, state_session_capacity=settings.demo_session_capacity,
        allowed_paths=[str(EXAMPLES_DIR)], theme=gr.themes.Soft(), footer_links=["api"], **options,
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    args = parse_args(settings, argv)
    if problem := model_problem(Path(args.model)):
        print(f"WARNING: {problem.replace('`', '')}\nServing the page anyway; classification will say so.",
              file=sys.stderr)
    else:
        print(f"loading {args.model} ...", file=sys.stderr)
    app = build_demo(args.model, args.max_batch_size, settings=settings, load=True)
    launch(app, settings, server_name=args.host, server_port=args.port, share=args.share, auth=parse_auth(args.auth))


if __name__ == "__main__":
    main()
