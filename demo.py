"""The Gradio demo: classify a photo (top-5 and a Grad-CAM heatmap) or several at once, run folder jobs, see how
the model was trained.

    python demo.py [--model BUNDLE] [--share] [--auth user:pass] [--host HOST] [--port PORT] [--max-batch-size N]

The composition of the web views in `webui/`: Classify (`webui.classify`), Upload (`webui.upload`: a visitor's
photos or a .zip, classified here), Batch (`webui.batch`, with its Review and Compare views), Teach
(`webui.teach`: a new model version from a person's photos or reviews, and the picker of versions) and Training.
`build_demo()` reads the settings and the bundle's small JSON files: no model load, no TensorFlow import and no
network I/O, so tests and Hugging Face Spaces can build it; `demo.demo` builds the configured app on first access.
The classifier loads once per process, at launch or on the first request, and serves the Classify and Upload tabs
on one network session (`model.explain`); Classify batches concurrent requests into one forward pass. The tabs ask
`webui.served.ServedModel` for the current bundle on each request, so switching versions needs no restart.
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

import cli
from model.bundle import read_card
from settings import Settings, get_settings
from webui.access import WRITES_OFF_NOTE, writes_open
from webui.batch import BatchTab, batch_tab
from webui.classify import EXAMPLES_DIR, ClassifyTab, classify_tab, model_problem
from webui.compare import CompareView, compare_view
from webui.review import ReviewView, review_view
from webui.served import ServedModel
from webui.teach import TeachView, teach_view
from webui.training import training_tab
from webui.upload import UploadTab, upload_tab

__all__ = ["EXAMPLES_DIR", "build_demo", "launch", "main"]


def build_demo(model_dir: str | os.PathLike | None = None, max_batch_size: int | None = None, *,
               settings: Settings | None = None, load: bool = False, writes: bool | None = None) -> gr.Blocks:
    """The whole app for one bundle. The network loads on the first request, or here with `load` (a server
    start: no user waits for it); a missing bundle gives a page that says so, not a traceback. `writes`: serve the
    write views (folder jobs and their listings, Review, Compare, Teach), in the page and the API; None decides as
    `webui.access.writes_open` does for the configured host (GRADIO_SERVER_NAME, DEMO_HOST), without --share."""
    settings = settings or get_settings()
    if writes is None:
        writes = writes_open(settings, host=os.environ.get("GRADIO_SERVER_NAME") or settings.demo_host, share=False)
    model_dir = Path(model_dir or settings.model_dir)
    # What Classify, Upload and Batch serve: the bundle it starts with until the Teach view switches it.
    served = ServedModel(model_dir, settings.models_dir, **settings.classifier_options())
    problem = model_problem(model_dir)
    if load and not problem:
        served.load()
    with gr.Blocks(title="DenseNet121 fruit classifier") as app:
        gr.Markdown("# DenseNet121 fruit classifier\nDrop in a photo of a fruit: the model names it, says how sure "
                    "it is, and shows which pixels drove its answer.")
        with gr.Tab("Classify"):
            classify_tab(ClassifyTab(served, settings, served.known), max_batch_size or settings.demo_max_batch_size)
            card = gr.Markdown(served.card(), elem_id="model-card")
        with gr.Tab("Upload"):
            upload_tab(UploadTab(served, settings))
        with gr.Tab("Batch"):
            if writes:
                batch_tab(BatchTab(lambda: served.model_dir, settings),
                          views=[functools.partial(review_view, ReviewView(settings)),
                                 functools.partial(compare_view, CompareView(settings))])
            else:  # not rendered at all: a view left out of the page is out of the API too
                gr.Markdown(WRITES_OFF_NOTE, elem_id="writes-off")
        with gr.Tab("Teach"):  # with writes off: the list of versions only, neither teaching nor switching
            teach_view(TeachView(served, settings), card, writes)
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
        cli.fail("--auth / DEMO_AUTH must look like user:password")
    return user, password


def parse_args(settings: Settings, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python demo.py", __doc__.split("\n\n")[0])
    p.add_argument("--model", default=settings.model_dir, help="model bundle folder (default: settings.model_dir)")
    p.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    p.add_argument("--auth", default=settings.demo_auth, help="user:password (default: env DEMO_AUTH)")
    # Hugging Face Spaces set GRADIO_SERVER_NAME/PORT; an explicit default here would override them.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or settings.demo_host,
                   help="address to serve on; 0.0.0.0 for every interface (default: env GRADIO_SERVER_NAME or "
                        "DEMO_HOST, else %(default)s)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or settings.demo_port),
                   help="port to serve on (default: env GRADIO_SERVER_PORT or DEMO_PORT, else %(default)s)")
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
    cli.quiet_frameworks()  # before the model's first TensorFlow import
    settings = get_settings()
    args = parse_args(settings, argv)
    if problem := model_problem(Path(args.model)):
        print(f"WARNING: {problem.replace('`', '')}\nServing the page anyway; classification will say so.",
              file=sys.stderr)
    else:
        print(f"loading {args.model} ...", file=sys.stderr)
    auth = parse_auth(args.auth)
    # --auth counts like DEMO_AUTH: with a login Gradio refuses every anonymous request, the API's included.
    writes = writes_open(settings.model_copy(update={"demo_auth": args.auth}), host=args.host, share=args.share)
    if not writes:
        print("Read-only: reachable from other machines without a login, so folder jobs, reviews and teaching are "
              "off (DEMO_AUTH=user:password, or DEMO_OPEN_WRITES=1 on a private network, turns them on).",
              file=sys.stderr)
    app = build_demo(args.model, args.max_batch_size, settings=settings, load=True, writes=writes)
    launch(app, settings, server_name=args.host, server_port=args.port, share=args.share, auth=auth)


if __name__ == "__main__":
    main()
