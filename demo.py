"""The Gradio demo: classify a photo (top-5 and a Grad-CAM heatmap) or several at once, run folder jobs, see how
the model was trained.

    python demo.py [--model BUNDLE] [--share] [--auth user:pass] [--host HOST] [--port PORT] [--max-batch-size N]

The composition of the web views in `webui/`: Classify (`webui.classify`), Upload (`webui.upload`: a visitor's
photos or a .zip, classified here), Batch (`webui.batch`, with its Review and Compare views) and Training.
`build_demo()` reads the settings and the bundle's small JSON files: no model load, no TensorFlow import and no
network I/O, so tests and Hugging Face Spaces can build it; `demo.demo` builds the configured app on first access.
The classifier loads once per process, at launch or on the first request, and serves the Classify and Upload tabs
on one network session (`model.explain`); Classify batches concurrent requests into one forward pass.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from model.bundle import BundleConfig, read_card
from model.card import card_markdown
from model.explain import Explainer
from settings import Settings, get_settings
from webui.batch import BatchTab, batch_tab
from webui.classify import EXAMPLES_DIR, ClassifyTab, classify_tab, model_problem
from webui.compare import CompareView, compare_view
from webui.review import ReviewView, review_view
from webui.training import training_tab
from webui.upload import UploadTab, upload_tab

__all__ = ["EXAMPLES_DIR", "build_demo", "launch", "main"]


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
    known = 0 if problem else len(BundleConfig.read(model_dir).labels)
    with gr.Blocks(title="DenseNet121 fruit classifier") as app:
        gr.Markdown("# DenseNet121 fruit classifier\nDrop in a photo of a fruit: the model names it, says how sure "
                    "it is, and shows which pixels drove its answer.")
        with gr.Tab("Classify"):
            classify_tab(ClassifyTab(explainer, settings, known), max_batch_size or settings.demo_max_batch_size)
            card = f"### Model\n**The model is not available.** {problem}" if problem else card_markdown(model_dir)
            gr.Markdown(card, elem_id="model-card")
        with gr.Tab("Upload"):
            upload_tab(UploadTab(explainer, settings))
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
