"""The Teach view: a person's own photos, or their reviews of a batch job, make a new model version that the demo
then serves; the model picker lists the versions, so a person can switch back.

Teaching is `train.teach.teach` on the served bundle (the head refitted on its frozen backbone, in seconds), written
to MODELS_DIR/<model_version>, where the workers find it too (`worker.submit --model`, a shared volume in compose).
Its sources (`webui.teach_data` makes them a folder-per-class set):
- photos with a class name, or one or more .zip files of class folders (`apple/1.jpg`, or `photos/apple/1.jpg`:
  an entry's class is the folder it is in; photos at a .zip's top level take the class name typed). An upload
  goes through the Upload tab's checks (`webui.upload.expand_upload`: zip bombs, sizes, pixels, hidden entries),
  with budgets for DEMO_TEACH_MAX_FILES photos instead of DEMO_UPLOAD_MAX_FILES;
- a batch job's reviewed images (`db.datasets`: the images a person labelled, under the reviewed label).

Teaching and switching versions are writes (`webui.access`): with writes off, neither is on the page nor in the
API, and only the list of versions is.

HTTP API:
    /teach (files, class name)          -> result, versions, served version, model card
    /teach_from_reviews (job id)        -> the same
    /list_models ()                     -> versions (served, version, parent, taught, classes, created)
    /use_model (model_version)          -> status, versions, served version, model card
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from settings import Settings
from webui.served import ServedModel
from webui.teach_data import review_dataset, teach_limits, upload_dataset
from webui.upload import UploadRefused

VERSION_COLUMNS = ["served", "version", "parent", "taught", "classes", "created (UTC)"]


# (what the page calls it, its key before teaching, its key after): train.teach's figures, out-of-fold after.
FIGURES = [
    ("top-1 on the taught photos", "taught_top1", "taught_top1_cv"),
    ("taught photos flagged unknown", "taught_flagged", "taught_flagged_cv"),
    ("top-1 on the base set's real photos (scene-CV)", "base_cv_top1", "base_cv_top1"),
    ("base photos flagged unknown", "base_flagged_cv", "base_flagged_cv"),
    ("not-fruit photos flagged unknown", "not_fruit_flagged", "not_fruit_flagged"),
    ("ECE (cross-validated)", "ece_cv", "ece_cv"),
    ("temperature", "temperature", "temperature"),
]
SHARES = {"taught_top1", "taught_flagged", "base_cv_top1", "base_flagged_cv", "not_fruit_flagged"}


def _figure(value: Any, key: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float) and key.removesuffix("_cv") in SHARES:
        return f"{value:.1%}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def figures_table(before: dict, after: dict) -> str:
    """The report's before/after figures as a Markdown table: the known ones by name, then any other."""
    before, after = before or {}, after or {}
    rows = [(name, _figure(before.get(b), b), _figure(after.get(a), a)) for name, b, a in FIGURES]
    known = {key for _, b, a in FIGURES for key in (b, a)}
    rows += [(key, _figure(before.get(key), key), _figure(after.get(key), key))
             for key in dict.fromkeys([*before, *after]) if key not in known and not isinstance(
                 before.get(key, after.get(key)), dict)]
    lines = [f"| {name} | {b} | {a} |" for name, b, a in rows if b or a]
    return "\n".join(["| | before | after |", "|---|---|---|", *lines]) if lines else ""


def report_markdown(report: Any, path: Path, skipped: list[str], data: Path) -> str:
    """What teaching did, in the page: the new version, what was taught and left out, the figures."""
    taught = ", ".join(f"{label} +{n}" for label, n in sorted(report.taught.items()))
    new = f" New classes: {', '.join(report.new_classes)}." if report.new_classes else ""
    left = list(skipped) + [line.removeprefix(f"{data}/") for line in report.skipped_files]
    left_out = (f"\n\nLeft out: {'; '.join(left[:5])}" + (f" and {len(left) - 5} more" if len(left) > 5 else "")
                if left else "")
    table = figures_table(report.before, report.after)
    return (f"**Taught version `{report.model_version}`** from `{report.parent_version}` in {report.seconds:.1f} s, "
            f"now served by Classify and Upload: {taught}.{new} Saved in `{path}`; a batch job can use it "
            f"(`python -m worker.submit DIR --model {path}`).{left_out}" + (f"\n\n{table}" if table else ""))


class TeachView:
    """The Teach view's handlers, bound to one app's served model and settings."""

    def __init__(self, served: ServedModel, settings: Settings):
        self.served, self.settings = served, settings
        self.limits = teach_limits(settings)

    # -- the model picker ------------------------------------------------------------------------------------------

    def versions_table(self) -> list[list]:
        served = self.served.model_dir.resolve()
        return [["yes" if v.path.resolve() == served else "", v.model_version, v.parent_version,
                 v.taught_words() or ("(the model the demo started with)" if v.started_with else ""), v.classes,
                 v.created] for v in self.served.versions()]

    def choices(self) -> list[tuple[str, str]]:
        return [(f"{v.model_version}  {v.taught_words() or '(started with)'}", v.model_version)
                for v in self.served.versions()]

    def picker(self) -> Any:
        """The version dropdown, its choices read again (the page's own events only)."""
        return gr.Dropdown(choices=self.choices(), value=self.served.version())

    def shown(self) -> tuple[list[list], str, str]:
        """(versions, served version, model card): what every teach and switch answers."""
        return self.versions_table(), self.served.version(), self.served.card()

    def page(self) -> tuple:
        """A page load or Refresh: what `shown` gives, and the dropdown."""
        return *self.shown(), self.picker()

    def use(self, model_version: str, request: gr.Request) -> tuple[str, list[list], str, str]:
        """Serve another listed version (by model_version)."""
        from webui.access import log_write

        try:
            version = self.served.use(model_version)
        except LookupError as exc:
            return f"**Not switched:** {exc}.", *self.shown()
        log_write(request, "use_model", model_version=version.model_version, path=str(version.path))
        return f"Classify and Upload now serve version `{version.model_version}`.", *self.shown()

    # -- teaching --------------------------------------------------------------------------------------------------

    def teach_upload(self, files: list[str] | None, typed_class: str | None, request: gr.Request,
                     progress: gr.Progress = gr.Progress()) -> tuple[str, list[list], str, str]:
        with tempfile.TemporaryDirectory(prefix="demo-teach-") as tmp:
            data = Path(tmp) / "data"
            try:
                progress(0.0, desc="Reading the upload")
                _, skipped = upload_dataset([str(f) for f in files or []], typed_class, self.limits, data)
            except UploadRefused as exc:
                return f"**Not taught:** {exc}", *self.shown()
            except OSError as exc:  # an uploaded file vanished from Gradio's cache
                return f"**Not taught:** cannot read the upload ({exc}).", *self.shown()
            return self._teach(data, skipped, request, progress, source="upload")

    def teach_reviews(self, job_id: str, request: gr.Request, progress: gr.Progress = gr.Progress()
                      ) -> tuple[str, list[list], str, str]:
        with tempfile.TemporaryDirectory(prefix="demo-teach-") as tmp:
            data = Path(tmp) / "data"
            try:
                progress(0.0, desc="Exporting the reviewed images")
                skipped = review_dataset(self.settings.database_url, job_id, data)
            except (LookupError, ValueError) as exc:
                return f"**Not taught:** {exc}", *self.shown()
            except Exception as exc:  # noqa: BLE001 - an unreachable database is reported in the page
                return f"**Not taught:** cannot read the results database ({exc}).", *self.shown()
            return self._teach(data, skipped, request, progress, source=f"reviews of job {job_id.strip()}")

    def _teach(self, data: Path, skipped: list[str], request: gr.Request, progress: Callable,
               source: str) -> tuple[str, list[list], str, str]:
        """Teach the served bundle `data`, keep the result as MODELS_DIR/<model_version> and serve it."""
        from train.teach import TeachError, teach
        from webui.access import log_write

        models = self.served.models_dir
        models.mkdir(parents=True, exist_ok=True)
        # Written under a hidden name (the picker skips it) and renamed once complete: no half bundle is listed.
        staging = models / f".teaching-{uuid.uuid4().hex[:8]}"
        parent = self.served.model_dir
        try:
            report = teach(parent, data, staging, settings=self.settings,
                           progress=lambda fraction, message: progress(fraction, desc=message))
            final = models / report.model_version
            if final.exists():  # the same photos taught to the same model again: the same bundle
                shutil.rmtree(staging)
            else:
                staging.rename(final)
        except TeachError as exc:
            return f"**Not taught:** {exc}", *self.shown()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        progress(1.0, desc="Loading the new version")
        self.served.use_path(final)
        log_write(request, "teach", model_version=report.model_version, parent_version=report.parent_version,
                  source=source, taught=dict(report.taught))
        return report_markdown(report, final, skipped, data), *self.shown()


def teach_view(view: TeachView, card: gr.Markdown, writes: bool) -> None:
    """The Teach tab's content: the teach forms (with writes on) and the model picker. `card` is the Classify tab's
    model card, shown again after each switch."""
    if writes:
        gr.Markdown("Teach the served model your own photos: it learns them in seconds (its backbone stays as it "
                    "is and only its last layer is refitted), becomes a new version, and Classify and Upload serve "
                    "it at once. A class name the model knows adds photos to that class; a new name adds a class.")
        with gr.Tabs():
            with gr.Tab("My photos"):
                files = gr.File(label=f"Photos of one class, or .zip files of class folders (up to "
                                      f"{view.limits.files:,} photos)", file_count="multiple", type="filepath",
                                elem_id="teach-files")
                typed = gr.Textbox(label="Class name of the photos (a .zip's folders name their own)", max_lines=1,
                                   elem_id="teach-class")
                teach_photos = gr.Button("Teach", variant="primary")
            with gr.Tab("From my reviews"):
                gr.Markdown("The images of a batch job that a person reviewed (Batch > Review), under the label "
                            "they were given.")
                job_id = gr.Textbox(label="Job id", max_lines=1, elem_id="teach-job")
                teach_job = gr.Button("Teach from reviews", variant="primary")
        result = gr.Markdown(elem_id="teach-result")
    else:
        from webui.access import WRITES_OFF_NOTE

        gr.Markdown(WRITES_OFF_NOTE)
    gr.Markdown("### Model versions\nThe model the demo started with and every taught version, newest first.")
    versions = gr.Dataframe(headers=VERSION_COLUMNS, interactive=False, elem_id="model-versions")
    with gr.Row():
        served = gr.Textbox(view.served.version(), label="Served now", interactive=False, scale=1,
                            elem_id="served-version")
        # Any value passes the dropdown (allow_custom_value): a version taught after the page loaded is not among
        # its choices until they are read again; ServedModel.use serves listed versions only.
        chosen = gr.Dropdown(label="Version", choices=view.choices(), value=view.served.version(),
                             allow_custom_value=True, interactive=writes, scale=3, elem_id="model-version")
        use = gr.Button("Serve this version", scale=1, visible=writes)
        refresh = gr.Button("Refresh", size="sm", scale=0)
    status = gr.Markdown(elem_id="model-status")
    shown = [versions, served, card]
    gr.on(None, view.page, None, [*shown, chosen], api_visibility="private", concurrency_limit=None)
    refresh.click(view.page, None, [*shown, chosen], api_visibility="private", concurrency_limit=None)
    gr.on([], view.versions_table, None, versions, api_name="list_models", concurrency_limit=None)  # API only
    if not writes:
        return
    # One teach at a time, in its own queue slot: it takes the CPU for seconds, not the Classify tab's slot. The
    # API answers the served version as text; the page then reads the dropdown's choices again.
    common = dict(concurrency_id="teach", concurrency_limit=1)
    for event in (teach_photos.click(view.teach_upload, [files, typed], [result, *shown], api_name="teach", **common),
                  teach_job.click(view.teach_reviews, job_id, [result, *shown], api_name="teach_from_reviews",
                                  **common),
                  use.click(view.use, chosen, [status, *shown], api_name="use_model", **common)):
        event.then(view.picker, None, chosen, api_visibility="private")
