"""The Batch tab's Compare view: two jobs on the same images (an old model and a new one, say), side by side.

`db.diffs.diff_jobs` does the matching (by content hash, so a copy of the folder matches) and the counting, as for
`python -m db.report --diff JOB_A JOB_B`; this view shows its counts, the from-to table and the changed images
with thumbnails, and which model agrees with the reviewer more where images were reviewed.

HTTP API: /compare_jobs (job A, job B; an id or a unique prefix) -> summary, from-to table, changed images.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from settings import Settings
from webui.batch import THUMBS, recent_jobs, thumb_html

CHANGES_SHOWN = 500  # rows of changed images in the page (thumbnails for the first THUMBS)


def _job_line(job: dict[str, Any], label: str) -> str:
    return f"{label} `{job['job_id']}` (model `{job['model_version']}`, `{job['folder']}`)"


def diff_markdown(diff: dict[str, Any]) -> str:
    """The diff's counts in a few lines; the reviewer's verdict only where reviews exist."""
    lines = [
        f"**{diff['changed']:,} of {diff['matched']:,} matched images changed label** "
        f"({diff['unchanged']:,} unchanged; {diff['only_in_a']:,} only in A, {diff['only_in_b']:,} only in B).",
        f"{_job_line(diff['job_a'], 'A:')}  \n{_job_line(diff['job_b'], 'B:')}",
    ]
    if diff["reviewer"]["reviewed"]:
        lines.append(f"**Reviewer:** {diff['reviewer']['text']}.")
    if diff["changed"] > CHANGES_SHOWN:
        lines.append(f"The table shows the first {CHANGES_SHOWN:,} changed images; "
                     "`python -m db.report --diff` lists them all.")
    return "\n\n".join(lines)


class CompareView:
    """The view's handlers, bound to one app's settings."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def job_choices(self) -> tuple[Any, Any]:
        """Both pickers filled with the recent jobs (newest first); a typed id or prefix works too."""
        choices = [(f"{j['job_id']}  {j['model_version']}  {j['folder']}", j["job_id"])
                   for j in recent_jobs(self.settings.database_url)]
        return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    def compare(self, job_a: str | None, job_b: str | None) -> tuple[str, list[list], list[list]]:
        """(summary, from-to rows [from, to, images], changed rows [thumbnail, label A, confidence A, label B,
        confidence B, reviewed label, path A, path B]); a clear error for a missing or unknown job."""
        from sqlalchemy.exc import SQLAlchemyError

        from db.diffs import diff_jobs
        from db.migrate import upgraded_sessions

        job_a, job_b = (job_a or "").strip(), (job_b or "").strip()
        if not job_a or not job_b:
            raise gr.Error("Pick two jobs to compare (A: the old run, B: the new one).", print_exception=False)
        try:
            with upgraded_sessions(self.settings.database_url)() as session:
                diff = diff_jobs(session, job_a, job_b)
        except LookupError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        except SQLAlchemyError as exc:
            raise gr.Error(f"Cannot read the results database: {exc}", print_exception=False) from exc
        transitions = [[t["from"], t["to"], t["count"]] for t in diff["transitions"]]
        pixels = self.settings.max_image_pixels
        changes = [[thumb_html(c["path_b"], pixels, side=72) or thumb_html(c["path_a"], pixels, side=72)
                    if i < THUMBS else "",
                    c["label_a"], _rounded(c["confidence_a"]), c["label_b"], _rounded(c["confidence_b"]),
                    c["reviewed_label"] or "", c["path_a"], c["path_b"]]
                   for i, c in enumerate(diff["changes"][:CHANGES_SHOWN])]
        return diff_markdown(diff), transitions, changes


def _rounded(confidence: float | None) -> float | None:
    return None if confidence is None else round(confidence, 4)


def compare_view(view: CompareView, job_id: gr.Textbox) -> None:
    """The Compare tab; job B starts as the Batch tab's job when the tab is opened."""
    with gr.Tab("Compare") as tab:
        gr.Markdown("Two jobs on the same images (say the old model's and the new one's, run on the same folder or "
                    "a copy of it): which images changed label, and, where images were reviewed, which model the "
                    "reviewer agrees with more.")
        with gr.Row():
            job_a = gr.Dropdown(label="Job A (before)", allow_custom_value=True, scale=2, elem_id="compare-a")
            job_b = gr.Dropdown(label="Job B (after)", allow_custom_value=True, scale=2, elem_id="compare-b")
            run = gr.Button("Compare", variant="primary", scale=1)
        summary = gr.Markdown(label="summary", elem_id="compare-summary")
        transitions = gr.Dataframe(headers=["from (A)", "to (B)", "images"], datatype=["str", "str", "number"],
                                   interactive=False, label="From-to (changed images)")
        changes = gr.Dataframe(headers=["", "A", "A confidence", "B", "B confidence", "reviewed", "path A", "path B"],
                               datatype=["html", "str", "number", "str", "number", "str", "str", "str"],
                               interactive=False, max_height=600, label="Changed images")
    choices = tab.select(view.job_choices, None, [job_a, job_b], api_visibility="private")
    choices.then(lambda job: gr.Dropdown(value=job.strip()) if job and job.strip() else gr.skip(), job_id, job_b,
                 api_visibility="private")
    run.click(view.compare, [job_a, job_b], [summary, transitions, changes], api_name="compare_jobs")
