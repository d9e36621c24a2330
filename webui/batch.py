"""The demo's Batch tab: submit a server folder to the Celery workers, follow the job, read its results.

The handlers are bound to one app's bundle and settings (`BatchTab`); the folder rule is
`webui.allowed_roots`, submission `jobs.submit`, progress `jobs.progress`, the results `db.results`.
"""

from __future__ import annotations

import atexit
import base64
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from model.images import ImageError, load_thumbnail
from settings import Settings
from webui.access import log_write
from webui.allowed_roots import allowed_roots, resolve_folder

NO_BROKER = ("**Folder jobs are not available here:** no task broker (Redis) is reachable, so folders on the server "
             "cannot be classified. Your own photos can: the **Upload** tab classifies several at once, or a .zip "
             "of them. (To run folder jobs, start Redis and a worker: `make batch-up`, docs/batch.md.)")
TABLE_ROWS = 500  # rows shown in the page (the CSV has them all); thumbnails for the first THUMBS
THUMBS = 100


def fleet_markdown(redis_url: str, database_url: str) -> str:
    """`python -m worker.status`'s line: workers online, queue length, running jobs with progress and rate."""
    try:
        from jobs.fleet import fleet_status, status_line
        from worker.broker import RedisBroker

        status = fleet_status(broker=RedisBroker(redis_url), database_url=database_url)
    except ImportError:  # a Space may run without Celery/Redis installed at all
        return NO_BROKER
    return f"**Fleet:** {status_line(status)}"


def recent_jobs(database_url: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest jobs, for the jobs list and the compare pickers; an unreachable database is a warning in the page,
    not an exception."""
    from db.migrate import upgraded_sessions
    from db.results import list_jobs

    try:
        with upgraded_sessions(database_url)() as session:
            return list_jobs(session, limit=limit)
    except Exception as exc:  # noqa: BLE001 - reported in the page
        gr.Warning(f"Cannot read the results database: {exc}")
        return []


def thumb_html(path: str, max_pixels: int, side: int = 56) -> str:
    """A small inline JPEG: thumbnails need no file route into the data folders."""
    try:
        return thumb_tag(load_thumbnail(path, side, max_pixels))
    except ImageError:
        return ""


def thumb_tag(thumb: np.ndarray) -> str:
    """An RGB array as an inline JPEG <img> tag."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(thumb).save(buf, "JPEG", quality=80)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="">'


class BatchTab:
    """The Batch tab's handlers, bound to one app's bundle and settings (read once, when the app is built).
    `model_dir` may be a function giving the bundle the demo serves now (the Teach view switches it)."""

    def __init__(self, model_dir: Path | Callable[[], Path], settings: Settings):
        self.model_dir, self.settings = model_dir, settings
        self.roots = allowed_roots(settings.demo_allowed_roots)
        self.csv_dir = Path(tempfile.mkdtemp(prefix="demo-jobs-"))  # one per app; a job's CSV replaces its last
        atexit.register(shutil.rmtree, self.csv_dir, ignore_errors=True)

    def bundle(self) -> Path:
        return self.model_dir() if callable(self.model_dir) else self.model_dir

    def broker_ready(self) -> bool:
        from worker.broker import RedisBroker

        try:
            return RedisBroker(self.settings.redis_url).available(timeout=1.0)
        except ImportError:  # a Space may run without Celery/Redis installed at all
            return False

    def availability(self) -> tuple[Any, Any]:
        """The folder form, or the one line that says why there is none (no broker): checked when a page loads,
        so a broker that comes up later is found without a restart."""
        ready = self.broker_ready()
        return gr.Column(visible=ready), gr.Markdown(NO_BROKER, visible=not ready)

    def submit_job(self, folder: str, recursive: bool, request: gr.Request | None = None) -> tuple[str, str, Any]:
        """Check the folder against the allow-list, then queue it; returns (message, job id, progress timer).
        A submitted job is logged with who asked (`webui.access.log_write`)."""
        try:
            real = resolve_folder(folder, self.roots)
        except ValueError as exc:
            return f"**Not submitted:** {exc}", "", gr.Timer(active=False)
        if not self.broker_ready():
            return NO_BROKER, "", gr.Timer(active=False)
        from db.migrate import upgrade
        from jobs.submit import SubmitError, submit_folder
        from worker.broker import RedisBroker

        s = self.settings
        upgrade(s.database_url)  # the demo is an entry point: its database is brought to the latest schema
        try:
            job_id = submit_folder(real, broker=RedisBroker(s.redis_url), recursive=recursive,
                                   model_dir=self.bundle(), chunk_size=s.chunk_size, database_url=s.database_url)
        except SubmitError as exc:
            return f"**Not submitted:** {exc}", "", gr.Timer(active=False)
        log_write(request, "submit_job", job_id=job_id, folder=str(real), recursive=bool(recursive))
        return f"Submitted job `{job_id}` for `{real}`.", job_id, gr.Timer(active=True)

    def _progress(self, job_id: str) -> tuple[str, bool | None]:
        """A job's progress line, and whether it has finished (None: no job to follow, or no database)."""
        job_id = (job_id or "").strip()
        if not job_id:
            return "", None
        try:
            from jobs.fleet import heal_note
            from jobs.progress import job_progress

            p = job_progress(job_id, database_url=self.settings.database_url)
        except LookupError as exc:
            return f"{exc}", None
        except Exception as exc:  # noqa: BLE001 - an unreachable database is reported in the page, not raised
            return f"Cannot read the results database: {exc}", None
        errors = f", {p['errors']:,} unreadable" if p.get("errors") else ""
        text = (f"**Job `{p['job_id']}`: {p['status']}**, {p['done']:,} of {p['total']:,} images "
                f"({p['fraction']:.0%}){errors}, {p['elapsed_s']:.0f} s{heal_note(p)}")
        return text, bool(p["finished"])

    def progress(self, job_id: str) -> tuple[str, Any]:
        """A job's progress line, and the timer switched off once the job has finished."""
        text, finished = self._progress(job_id)
        return text, gr.Timer(active=finished is False)

    def poll(self, job_id: str, always: bool = False) -> tuple:
        """The timer's tick: the progress line and, once the job has finished, its results (so they show without
        a click); while it runs the results on the page are left as they are. `always`: the results in any case."""
        text, finished = self._progress(job_id)
        report = self.job_report(job_id) if finished or always else (gr.skip(),) * 5
        return text, gr.Timer(active=finished is False), *report

    def show(self, job_id: str) -> tuple:
        """"Show results": progress and results in one event, so that no tick of the timer it starts can overtake
        it and be overwritten by an older reading."""
        return self.poll(job_id, always=True)

    def fleet(self) -> str:
        """`python -m worker.status`'s line: workers online, queue length, running jobs with progress and rate."""
        return fleet_markdown(self.settings.redis_url, self.settings.database_url)

    def jobs_table(self) -> list[list]:
        return [[j["job_id"], j["status"], j["done"], j["total"], (j["created_at"] or "")[:19], j["folder"]]
                for j in recent_jobs(self.settings.database_url)]

    def job_report(self, job_id: str) -> tuple[str, list[list], Any, Any, str | None]:
        """Summary, results (least confident first), label counts, confidence histogram and the CSV file."""
        import pandas as pd

        empty = pd.DataFrame({"label": [], "images": []}), pd.DataFrame({"confidence": [], "images": []})
        job_id = (job_id or "").strip()
        if not job_id:
            return "Enter a job id, or pick one in the jobs list.", [], *empty, None
        from db.formats import PREDICTION_COLUMNS, write_csv
        from db.migrate import upgraded_sessions
        from db.results import job_predictions, job_summary

        threshold = self.settings.demo_uncertain_below
        try:
            with upgraded_sessions(self.settings.database_url)() as session:
                summary = job_summary(session, job_id, low_confidence_below=threshold)
                rows = job_predictions(session, summary["job"]["job_id"])
        except LookupError as exc:
            return f"{exc}", [], *empty, None
        except Exception as exc:  # noqa: BLE001
            return f"Cannot read the results database: {exc}", [], *empty, None
        job = summary["job"]
        table = [[thumb_html(r["path"], self.settings.max_image_pixels) if i < THUMBS else "", r["label"] or "",
                  None if r["confidence"] is None else round(r["confidence"], 4), r["error"] or "", r["path"]]
                 for i, r in enumerate(rows[:TABLE_ROWS])]
        labels = pd.DataFrame({"label": [x["label"] for x in summary["labels"]],
                               "images": [x["count"] for x in summary["labels"]]})
        hist = pd.DataFrame({"confidence": [f"{h['from']:.1f}-{h['to']:.1f}" for h in summary["histogram"]],
                             "images": [h["count"] for h in summary["histogram"]]})
        csv_path = self.csv_dir / f"job-{job['job_id']}.csv"
        with tempfile.NamedTemporaryFile("w", dir=self.csv_dir, suffix=".tmp", newline="", delete=False) as f:
            write_csv(None, rows, PREDICTION_COLUMNS, f)
        os.replace(f.name, csv_path)  # a concurrent download of the same job never reads a half-written file
        more = f" The table shows the first {TABLE_ROWS:,}; the CSV has all." if len(rows) > TABLE_ROWS else ""
        text = (f"**Job `{job['job_id']}`: {job['status']}**, `{job['folder']}`: {job['done']:,} of {job['total']:,} "
                f"images, {job['errors']:,} unreadable, {summary['low_confidence_count']:,} below {threshold:.0%} "
                f"confidence (listed first), model `{job['model_version']}`.{more}")
        return text, table, labels, hist, str(csv_path)


def pick_job(evt: gr.SelectData) -> str:
    return str((evt.row_value or [""])[0])


def results_view() -> tuple[gr.Markdown, gr.Dataframe, gr.BarPlot, gr.BarPlot, gr.DownloadButton]:
    """A job's results: summary, charts, CSV and table (the outputs of `BatchTab.job_report`, in its order)."""
    summary = gr.Markdown(elem_id="job-summary")
    # y_lim [0, None]: Gradio's plots do not start the axis at zero by themselves, so with counts of 1 and more
    # the axis began at 1 and a class with one image showed no bar.
    with gr.Row():
        labels_plot = gr.BarPlot(x="label", y="images", title="Images per label", y_lim=[0, None])
        hist_plot = gr.BarPlot(x="confidence", y="images", title="Confidence histogram", sort="x", y_lim=[0, None])
    csv_file = gr.DownloadButton("Download CSV", value=None)
    table = gr.Dataframe(headers=["", "label", "confidence", "error", "path"],
                         datatype=["html", "str", "number", "str", "str"], interactive=False, max_height=600)
    return summary, table, labels_plot, hist_plot, csv_file


def batch_tab(tab: BatchTab, views: Sequence[Callable[[gr.Textbox], None]] = ()) -> None:
    """The Batch tab; each of `views` (the Review and Compare views, say) adds a tab of its own beside the job's
    results, given the job id box."""
    roots = ", ".join(f"`{r}`" for r in tab.roots) or "(none)"
    unavailable = gr.Markdown(NO_BROKER, visible=False, elem_id="batch-unavailable")
    with gr.Column(visible=False) as form:
        gr.Markdown("Classify every image in a folder on the server with the Celery workers; results are stored in "
                    f"the database. Folders must be inside: {roots}.")
        with gr.Row():
            folder = gr.Textbox(label="Folder on the server", placeholder="a folder under an allowed root", scale=4)
            recursive = gr.Checkbox(label="Include subfolders", scale=1)
            submit = gr.Button("Submit job", variant="primary", scale=1)
        status = gr.Markdown()
        with gr.Row():
            fleet = gr.Markdown()
            fleet_button = gr.Button("Fleet status", size="sm", scale=0)
    # Each page load asks the broker (1 s at most, outside the model's queue): the form, or the line saying why not.
    gr.on(None, tab.availability, None, [form, unavailable], api_visibility="private", concurrency_limit=None)
    with gr.Row():
        job_id = gr.Textbox(label="Job id", max_lines=1, scale=3, elem_id="job-id")
        show = gr.Button("Show results", scale=1)
    progress = gr.Markdown(elem_id="job-progress")
    with gr.Accordion("Recent jobs (click a row to pick it)", open=False):
        refresh = gr.Button("Refresh", size="sm")
        jobs = gr.Dataframe(headers=["job", "status", "done", "total", "created (UTC)", "folder"], interactive=False)
    with gr.Tabs():
        with gr.Tab("Results"):
            report = results_view()
        for view in views:
            view(job_id)
    timer = gr.Timer(2.0, active=False)
    submit.click(tab.submit_job, [folder, recursive], [status, job_id, timer], api_name="submit_job")
    timer.tick(tab.poll, job_id, [progress, timer, *report], api_visibility="private")
    timer.tick(tab.fleet, None, fleet, api_visibility="private")
    fleet_button.click(tab.fleet, None, fleet, api_name="fleet_status")
    refresh.click(tab.jobs_table, None, jobs, api_name="list_jobs")
    show.click(tab.show, job_id, [progress, timer, *report], api_visibility="private")
    gr.on([], tab.job_report, job_id, list(report), api_name="job_report")  # API only: the results alone
    # Picking a job shows it at once; the timer follows it when it is still running.
    jobs.select(pick_job, None, job_id, api_visibility="private").then(
        tab.show, job_id, [progress, timer, *report], api_visibility="private")
