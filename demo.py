"""The Gradio demo: classify a photo (top-5 and a Grad-CAM heatmap), run folder jobs, see how the model was trained.

    python demo.py [--model BUNDLE] [--share] [--auth user:pass] [--host HOST] [--port PORT]

`demo` is built at import time with no model load, no TensorFlow import and no network I/O, so tests and
Hugging Face Spaces can import it. The classifier loads once per process: at launch, or on the first request.
Classification is batched (`batch=True`, bounded `max_batch_size`): concurrent users share one forward pass.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from model.bundle import BundleConfig, read_card
from model.images import ImageError, load_thumbnail
from settings import ROOT, get_settings

EXAMPLES_DIR = ROOT / "examples"
PLOTS = (("accuracy.png", "Accuracy per epoch"), ("loss.png", "Loss per epoch"),
         ("confusion_matrix.png", "Confusion matrix (validation set)"))
NO_IMAGE = "No image: upload a photo, take one with the webcam, or paste one from the clipboard."
OVERLAY_SIDE = 384  # the heatmap is drawn on a copy of the photo at most this big


# -- the model, loaded once per process -------------------------------------------------------------------------

class ModelUnavailable(RuntimeError):
    """The bundle folder is missing or incomplete; the message says what to do."""


@dataclass
class Outcome:
    """What the page shows for one image."""

    label: dict[str, float] | None = None
    heatmap: np.ndarray | None = None
    verdict: str = ""


class Engine:
    """The classifier and its Grad-CAM for one bundle: loaded lazily, once, whichever thread asks first."""

    def __init__(self, model_dir: str | os.PathLike):
        self.model_dir = Path(model_dir)
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent forward-pass sizes: is batching happening?

    def missing(self) -> str | None:
        """Why the bundle cannot be used, or None when it looks complete (checked without loading it)."""
        if not (self.model_dir / "config.json").is_file() or not (self.model_dir / "model.keras").is_file():
            return (f"No model bundle at `{self.model_dir}` (it needs `config.json` and `model.keras`). "
                    "The shipped fruit model may not be trained yet: run `make train-fruits` and copy its `bundle/` "
                    "there, or start the demo with `--model PATH`.")
        return None

    def load(self) -> tuple[Any, Any]:
        """(Classifier, GradCAM); the first call loads and warms them up (compiles the forward pass)."""
        with self._lock:
            if self._loaded is None:
                if reason := self.missing():
                    raise ModelUnavailable(reason)
                from model.gradcam import GradCAM
                from model.predict import load_classifier

                clf = load_classifier(self.model_dir)
                cam = GradCAM.for_classifier(clf)  # the page's only forward pass: probabilities and heatmap
                size = clf.input_size
                for n in (1, 2):  # the first calls allocate (ONNX) or trace (TF): pay that before any user does
                    cam(np.zeros((n, size, size, 3), np.float32))
                self._loaded = (clf, cam)
            return self._loaded

    def classify(self, sources: Sequence[str | bytes | None], top_k: int, uncertain_below: float,
                 explain: bool = True) -> list[Outcome]:
        """One Outcome per source (None gives an empty one); a single forward pass for the whole batch.

        `explain` adds the Grad-CAM overlay, which comes out of that same pass; without it the plain
        classifier runs and nothing is drawn (the API's `/predict`).
        """
        clf, cam = self.load()
        present = [s for s in sources if s is not None]
        self.batch_sizes.append(len(present))
        batch, errors = clf.preprocess(present)
        if explain:
            probs, maps = cam.explain(batch)
        else:
            probs, maps = clf.forward(batch), [None] * len(batch)
        ranked = iter(zip(clf.postprocess(probs, top_k), maps, strict=True))
        outcomes = iter([self._outcome(src, err, ranked, clf.max_pixels, uncertain_below)
                         for src, err in zip(present, errors, strict=True)])
        return [next(outcomes) if s is not None else Outcome() for s in sources]

    @staticmethod
    def _outcome(source, error, ranked, max_pixels: int, uncertain_below: float) -> Outcome:
        if error:  # a batch function cannot reject one request alone: the reason goes into its verdict
            return Outcome(verdict=f"**Cannot use this image:** {error}")
        top, heat = next(ranked)
        if heat is None:
            return Outcome(label=dict(top), verdict=verdict(top, uncertain_below, explained=False))
        return Outcome(label=dict(top), heatmap=_overlay(source, heat, max_pixels),
                       verdict=verdict(top, uncertain_below))


def _overlay(source: str | bytes, heat: np.ndarray, max_pixels: int) -> np.ndarray | None:
    from model.gradcam import overlay

    try:
        return overlay(load_thumbnail(source, OVERLAY_SIDE, max_pixels), heat)
    except ImageError:
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


# -- request payloads ---------------------------------------------------------------------------------------------

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


# -- model card and training report --------------------------------------------------------------------------------

def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else str(value)


def metrics_lines(metrics: dict) -> list[str]:
    lines = []
    for split, m in metrics.items():
        if not isinstance(m, dict):
            continue
        if "top1" in m:
            parts = [f"top-1 **{_pct(m['top1'])}**"]
            parts += [f"top-5 {_pct(m['top5'])}"] if "top5" in m else []
            parts += [f"macro-F1 {m['macro_f1']:.3f}"] if isinstance(m.get("macro_f1"), (int, float)) else []
            parts += [f"n = {m['n']:,}"] if isinstance(m.get("n"), int) else []
            lines.append(f"- {split}: " + ", ".join(parts))
        else:  # a group breakdown, e.g. val_by_source: {"grocery": {"top1": ..}, "fruits360": {...}}
            groups = [f"{g} {_pct(v.get('top1', v.get('accuracy', '?')))}" for g, v in m.items() if isinstance(v, dict)]
            if groups:
                lines.append(f"- {split} (top-1): " + ", ".join(groups))
    return lines


def model_card_markdown(model_dir: Path, problem: str | None) -> str:
    if problem:
        return f"### Model\n**The model is not available.** {problem}"
    config = BundleConfig.read(model_dir)
    card = read_card(model_dir)
    data = card.get("dataset", "unknown")
    if card.get("extra_data"):
        data += f" (plus `{card['extra_data']}` as extra negative classes)"
    counts = [f"{sum(card[k].values()):,} {k.split('_')[0]}" for k in ("train_counts", "val_counts")
              if isinstance(card.get(k), dict)]
    version = f", trained {card['date'][:10]}" if card.get("date") else ""
    parts = [
        "### Model card",
        f"**{config.architecture}**, input {config.input_size}x{config.input_size}, weights from "
        f"`{config.weights}`, version `{config.model_version}`{version}",
        f"**Training data:** {data}" + (f" ({', '.join(counts)} images)" if counts else ""),
    ]
    lines = metrics_lines(card.get("metrics") or {})
    parts.append("**Accuracy:**\n" + "\n".join(lines) if lines else "**Accuracy:** not recorded in card.json")
    parts.append(f"**Classes ({len(config.labels)}):** " + ", ".join(config.labels))
    return "\n\n".join(parts)


def find_plot(model_dir: Path, name: str) -> Path | None:
    """A training plot in the bundle folder, or in the run folder around a run's `bundle/`."""
    for folder in (model_dir, model_dir.parent):
        if (folder / name).is_file():
            return folder / name
    return None


# -- the Batch tab's folder rule ----------------------------------------------------------------------------------

def allowed_roots(spec: str) -> list[Path]:
    """settings.demo_allowed_roots (os.pathsep-separated) as real, absolute paths."""
    return [Path(p).expanduser().resolve() for p in spec.split(os.pathsep) if p.strip()]


def resolve_folder(folder: str, roots: Sequence[Path]) -> Path:
    """The real path of `folder` when it is an existing folder inside one of `roots`, else ValueError.

    Symlinks are resolved before the check, so a link inside a root that points outside is refused; `..` is
    refused outright. A relative path is looked up under each root in turn.
    """
    text = (folder or "").strip()
    if not text:
        raise ValueError("Enter a folder path.")
    if not roots:
        raise ValueError("No folders are open to batch jobs (set DEMO_ALLOWED_ROOTS).")
    raw = Path(text).expanduser()
    if ".." in raw.parts:
        raise ValueError("Paths with '..' are not accepted.")
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    inside = False
    for candidate in candidates:
        real = candidate.resolve()
        if not any(real == root or real.is_relative_to(root) for root in roots):
            continue
        inside = True
        if real.is_dir():
            return real
        if real.exists():
            raise ValueError(f"Not a folder: {text}")
    if inside:
        raise ValueError(f"No such folder: {text}")
    where = ", ".join(f"`{r}`" for r in roots)
    raise ValueError(f"`{text}` is not inside a folder open to batch jobs ({where}).")


# -- Classify tab -------------------------------------------------------------------------------------------------

def example_paths() -> list[str]:
    """One photo per class first, then the second of each: the first page of examples shows every class."""
    per_class = [sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
                 for d in sorted(EXAMPLES_DIR.iterdir()) if d.is_dir()] if EXAMPLES_DIR.is_dir() else []
    rounds = max((len(files) for files in per_class), default=0)
    return [str(files[i]) for i in range(rounds) for files in per_class if i < len(files)]


def classify_tab(engine: Engine, max_batch_size: int) -> None:
    settings = get_settings()

    def classify(images: list, required: bool, explain: bool = True) -> tuple[list, list, list]:
        # A batch function must not raise for one bad image (that would fail every request in the batch):
        # each image gets its own outcome, and an unreadable one gets the core's ImageError text.
        try:
            outcomes = engine.classify([payload_source(p) for p in images], settings.top_k,
                                       settings.demo_uncertain_below, explain)
        except ModelUnavailable as exc:  # no model: every request fails the same way
            raise gr.Error(str(exc), print_exception=False) from exc
        if required:
            outcomes = [Outcome(verdict=f"**{NO_IMAGE}**") if payload_source(p) is None else o
                        for p, o in zip(images, outcomes, strict=True)]
        return [o.label for o in outcomes], [o.heatmap for o in outcomes], [o.verdict for o in outcomes]

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


# -- Batch tab ----------------------------------------------------------------------------------------------------

NO_BROKER = ("**Batch jobs are not available here:** no task broker (Redis) is reachable, so folder jobs cannot "
             "run. Start Redis and a worker (README, *Batch classification*); the Classify tab works without them.")


TABLE_ROWS = 500  # rows shown in the page (the CSV has them all); thumbnails for the first THUMBS
THUMBS = 100


def broker_ready() -> bool:
    try:  # a Space may run without Celery/Redis installed at all
        from worker.submit import broker_available
    except ImportError:
        return False
    return broker_available(timeout=1.0)


def submit_job(folder: str, recursive: bool, model_dir: str) -> tuple[str, str, Any]:
    """Check the folder against the allow-list, then queue it; returns (message, job id, progress timer)."""
    try:
        real = resolve_folder(folder, allowed_roots(get_settings().demo_allowed_roots))
    except ValueError as exc:
        return f"**Not submitted:** {exc}", "", gr.Timer(active=False)
    if not broker_ready():
        return NO_BROKER, "", gr.Timer(active=False)
    from worker.submit import SubmitError, submit_folder

    try:
        job_id = submit_folder(real, recursive=recursive, model_dir=model_dir)
    except SubmitError as exc:
        return f"**Not submitted:** {exc}", "", gr.Timer(active=False)
    return f"Submitted job `{job_id}` for `{real}`.", job_id, gr.Timer(active=True)


def progress_markdown(job_id: str) -> tuple[str, Any]:
    """A job's progress line, and the timer switched off once the job has finished."""
    job_id = (job_id or "").strip()
    if not job_id:
        return "", gr.Timer(active=False)
    try:
        from db.reports import find_job, job_dict
        from db.session import session_factory

        with session_factory()() as session:
            p = job_dict(find_job(session, job_id))
    except LookupError as exc:
        return f"{exc}", gr.Timer(active=False)
    except Exception as exc:  # noqa: BLE001 - an unreachable database is reported in the page, not raised
        return f"Cannot read the results database: {exc}", gr.Timer(active=False)
    errors = f", {p['errors']:,} unreadable" if p.get("errors") else ""
    text = (f"**Job `{p['job_id']}`: {p['status']}**, {p['done']:,} of {p['total']:,} images "
            f"({p['fraction']:.0%}){errors}, {p['elapsed_s']:.0f} s")
    return text, gr.Timer(active=not p["finished"])


def fleet_markdown() -> str:
    """`python -m worker.status`'s line: workers online, queue length, running jobs with progress and rate."""
    try:
        from worker.status import fleet_line
    except ImportError:  # a Space may run without Celery/Redis installed at all
        return NO_BROKER
    return f"**Fleet:** {fleet_line()}"


def pick_job(evt: gr.SelectData) -> str:
    return str((evt.row_value or [""])[0])


def jobs_table() -> list[list]:
    from db.reports import list_jobs
    from db.session import session_factory

    try:
        with session_factory()() as session:
            jobs = list_jobs(session, limit=50)
    except Exception as exc:  # noqa: BLE001
        gr.Warning(f"Cannot read the results database: {exc}")
        return []
    return [[j["job_id"], j["status"], j["done"], j["total"], (j["created_at"] or "")[:19], j["folder"]]
            for j in jobs]


def _thumb_html(path: str, side: int = 56) -> str:
    """A small inline JPEG: thumbnails need no file route into the data folders."""
    from PIL import Image

    try:
        img = Image.fromarray(load_thumbnail(path, side, get_settings().max_image_pixels))
    except ImageError:
        return ""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="">'


def job_report(job_id: str) -> tuple[str, list[list], Any, Any, str | None]:
    """Summary, results (least confident first), label counts, confidence histogram and the CSV file."""
    import pandas as pd

    empty = pd.DataFrame({"label": [], "images": []}), pd.DataFrame({"confidence": [], "images": []})
    job_id = (job_id or "").strip()
    if not job_id:
        return "Enter a job id, or pick one in the jobs list.", [], *empty, None
    from db.report import PREDICTION_COLUMNS, write_csv
    from db.reports import job_predictions, job_summary
    from db.session import session_factory

    threshold = get_settings().demo_uncertain_below
    try:
        with session_factory()() as session:
            summary = job_summary(session, job_id, low_confidence_below=threshold)
            rows = job_predictions(session, summary["job"]["job_id"])
    except LookupError as exc:
        return f"{exc}", [], *empty, None
    except Exception as exc:  # noqa: BLE001
        return f"Cannot read the results database: {exc}", [], *empty, None
    job = summary["job"]
    table = [[_thumb_html(r["path"]) if i < THUMBS else "", r["label"] or "",
              None if r["confidence"] is None else round(r["confidence"], 4), r["error"] or "", r["path"]]
             for i, r in enumerate(rows[:TABLE_ROWS])]
    labels = pd.DataFrame({"label": [x["label"] for x in summary["labels"]],
                           "images": [x["count"] for x in summary["labels"]]})
    hist = pd.DataFrame({"confidence": [f"{h['from']:.1f}-{h['to']:.1f}" for h in summary["histogram"]],
                         "images": [h["count"] for h in summary["histogram"]]})
    csv_path = Path(tempfile.mkdtemp(prefix="demo-job-")) / f"job-{job['job_id']}.csv"
    with open(csv_path, "w", newline="") as f:
        write_csv(None, rows, PREDICTION_COLUMNS, f)
    more = f" The table shows the first {TABLE_ROWS:,}; the CSV has all." if len(rows) > TABLE_ROWS else ""
    text = (f"**Job `{job['job_id']}`: {job['status']}**, `{job['folder']}`: {job['done']:,} of {job['total']:,} "
            f"images, {job['errors']:,} unreadable, {summary['low_confidence_count']:,} below {threshold:.0%} "
            f"confidence (listed first), model `{job['model_version']}`.{more}")
    return text, table, labels, hist, str(csv_path)


def batch_tab(model_dir: Path) -> None:
    roots = ", ".join(f"`{r}`" for r in allowed_roots(get_settings().demo_allowed_roots)) or "(none)"
    gr.Markdown("Classify every image in a folder on the server with the Celery workers; results are stored in "
                f"the database. Folders must be inside: {roots}.")
    with gr.Row():
        folder = gr.Textbox(label="Folder on the server", placeholder="a folder under an allowed root", scale=4)
        recursive = gr.Checkbox(label="Include subfolders", scale=1)
        submit = gr.Button("Submit job", variant="primary", scale=1)
    status = gr.Markdown()
    with gr.Row():
        job_id = gr.Textbox(label="Job id", max_lines=1, scale=3)
        show = gr.Button("Show results", scale=1)
    progress = gr.Markdown()
    with gr.Row():
        fleet = gr.Markdown()
        fleet_button = gr.Button("Fleet status", size="sm", scale=0)
    timer = gr.Timer(2.0, active=False)
    submit.click(submit_job, [folder, recursive, gr.State(str(model_dir))], [status, job_id, timer],
                 api_name="submit_job")
    timer.tick(progress_markdown, job_id, [progress, timer], api_visibility="private")
    timer.tick(fleet_markdown, None, fleet, api_visibility="private")
    fleet_button.click(fleet_markdown, None, fleet, api_name="fleet_status")
    with gr.Accordion("Recent jobs (click a row to pick it)", open=False):
        refresh = gr.Button("Refresh", size="sm")
        jobs = gr.Dataframe(headers=["job", "status", "done", "total", "created (UTC)", "folder"], interactive=False)
    refresh.click(jobs_table, None, jobs, api_name="list_jobs")
    jobs.select(pick_job, None, job_id, api_visibility="private")
    summary = gr.Markdown()
    with gr.Row():
        labels_plot = gr.BarPlot(x="label", y="images", title="Images per label")
        hist_plot = gr.BarPlot(x="confidence", y="images", title="Confidence histogram", sort="x")
    csv_file = gr.DownloadButton("Download CSV", value=None)
    table = gr.Dataframe(headers=["", "label", "confidence", "error", "path"],
                         datatype=["html", "str", "number", "str", "str"], interactive=False, max_height=600)
    show.click(job_report, job_id, [summary, table, labels_plot, hist_plot, csv_file], api_name="job_report")
    show.click(progress_markdown, job_id, [progress, timer], api_visibility="private")


# -- Training tab -------------------------------------------------------------------------------------------------

def training_tab(model_dir: Path) -> None:
    card = read_card(model_dir)
    lines = metrics_lines(card.get("metrics") or {})
    gr.Markdown("How the shipped model was trained. " + ("\n\n" + "\n".join(lines) if lines else ""))
    found = [(find_plot(model_dir, name), title) for name, title in PLOTS]
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


# -- the app ------------------------------------------------------------------------------------------------------

def build_demo(model_dir: str | os.PathLike | None = None, max_batch_size: int | None = None) -> gr.Blocks:
    """The whole app for one bundle (reads only its small JSON files; the network loads on first use)."""
    settings = get_settings()
    model_dir = Path(model_dir or settings.model_dir)
    engine = Engine(model_dir)
    problem = engine.missing()
    with gr.Blocks(title="DenseNet121 fruit classifier") as app:
        gr.Markdown("# DenseNet121 fruit classifier\nDrop in a photo of a fruit: the model names it, says how sure "
                    "it is, and shows which pixels drove its answer.")
        with gr.Tab("Classify"):
            classify_tab(engine, max_batch_size or settings.demo_max_batch_size)
            gr.Markdown(model_card_markdown(model_dir, problem), elem_id="model-card")
        with gr.Tab("Batch"):
            batch_tab(model_dir)
        with gr.Tab("Training"):
            training_tab(model_dir)
    app.engine = engine  # launch() preloads it; tests reach it
    return app


demo = build_demo()


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth / DEMO_AUTH must look like user:password")
    return user, password


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    settings = get_settings()
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


def launch(app: gr.Blocks, **options: Any) -> Any:
    """Queue and serve `app` with the settings' limits (queue size, upload size, sessions kept); `options` go to
    `Blocks.launch` (host, port, share, auth...). The tests serve the app through this too."""
    settings = get_settings()
    return app.queue(max_size=settings.demo_queue_size).launch(
        max_file_size=settings.demo_max_file_size, state_session_capacity=settings.demo_session_capacity,
        allowed_paths=[str(EXAMPLES_DIR)], theme=gr.themes.Soft(), footer_links=["api"], **options,
    )


def main(argv: Sequence[str] | None = None) -> None:
    global demo
    args = parse_args(argv)
    settings = get_settings()
    if Path(args.model).resolve() != Path(settings.model_dir).resolve() \
            or args.max_batch_size != settings.demo_max_batch_size:
        demo = build_demo(args.model, args.max_batch_size)
    if problem := demo.engine.missing():
        print(f"WARNING: {problem.replace('`', '')}\nServing the page anyway; classification will say so.",
              file=sys.stderr)
    else:
        print(f"loading {args.model} ...", file=sys.stderr)
        demo.engine.load()
    launch(demo, server_name=args.host, server_port=args.port, share=args.share, auth=parse_auth(args.auth))


if __name__ == "__main__":
    main()
