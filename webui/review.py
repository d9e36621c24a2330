"""The Batch tab's Review view: walk a job's images, lowest confidence first, and say what each one shows.

One image at a time, large, with the model's top-5. Keys, while the view is on screen and no text field has the
focus: Enter accepts the model's label, 1-5 pick the k-th of the top-5, 0 or n marks "none of these / skip"; the
dropdown picks any label of the model. Reviews are stored by `db.reviews` (what `python -m db.review` uses),
under the demo's login name, or "demo" when the demo has no login.

HTTP API (no trigger on the page, so the page's own events can send more: see `review_view`):
    /review_next (job id)                       -> image, path, status, item
    /review_set  (job id, path as stored, label) -> stores the review, then the same for the next image
`label` is one of the model's labels or "(none of these)"; `item` is the next image's data as JSON (file, label,
confidence, top_k, labels, reviewed, total, progress, accuracy, last: the review just stored), with `file` None once
all are reviewed. No key is called "path": gradio_client would take such a dict for a file to download.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import gradio as gr
import numpy as np

from db.reviews import NONE_OF_THESE
from model.images import ImageError, load_thumbnail
from settings import Settings
from webui.access import log_write

REVIEW_SIDE = 720  # px, the longest side of the image shown: large enough to judge a fruit, quick to send
ANONYMOUS = "demo"  # the reviewer's name when the demo runs without --auth
TOP = 5

# One document-level listener (js_on_load runs again whenever the view is re-mounted). It acts only while the view
# is visible and never while the focus is in a text field, so typing a job id or a label is not taken for a review;
# it clicks the view's own buttons, so a key does exactly what the button under it does.
KEYS_JS = """
if (!window.__reviewKeys) {
  window.__reviewKeys = true;
  document.addEventListener('keydown', (e) => {
    const view = document.getElementById('review-view');
    if (!view || view.offsetParent === null || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
    let id = null;
    if (e.key === 'Enter') id = 'review-accept';
    else if (/^[1-5]$/.test(e.key)) id = 'review-pick-' + e.key;
    else if (e.key === '0' || e.key === 'n' || e.key === 'N') id = 'review-skip';
    if (!id) return;
    const el = document.getElementById(id);
    const button = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
    if (!button || button.disabled || button.offsetParent === null) return;
    e.preventDefault();  // also keeps Enter from clicking whichever button has the focus
    button.click();
  });
}
"""
KEYS_HELP = ("<b>Enter</b> accepts the model's label &middot; <b>1</b>-<b>5</b> pick from the top-5 &middot; "
             "<b>0</b> or <b>n</b>: none of these / skip &middot; or pick any label below")


def reviewer_of(request: gr.Request | None) -> str:
    """The demo's login name (`--auth`), or ANONYMOUS when it has none."""
    return getattr(request, "username", None) or ANONYMOUS


def _describe(review: dict[str, Any]) -> str:
    verdict = review["reviewed_label"] if review["reviewed_label"] is not None else "none of these"
    agreement = "agrees with" if review["agrees"] else "corrects"
    return (f"Saved `{PurePath(review['path']).name}`: **{verdict}** ({agreement} the model's "
            f"{review['model_label']}), by {review['reviewer']}.")


def status_markdown(item: dict[str, Any], note: str = "") -> str:
    head = f"**{item['progress']}** &middot; model {item['accuracy']}"
    if item["file"] is None:
        body = "All classified images of this job are reviewed."
    else:
        body = f"The model says **{item['label']}** at {item['confidence']:.0%}."
    return "\n\n".join(x for x in (head, body, note) if x)


class ReviewView:
    """The view's handlers, bound to one app's settings."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def _open(self, job_id: str, review: tuple[str, str | None, str] | None) -> tuple[Any, str, str, dict]:
        from sqlalchemy.exc import SQLAlchemyError

        from db.migrate import upgraded_sessions
        from db.reviews import ReviewError, set_review

        job_id = (job_id or "").strip()
        if not job_id:
            raise gr.Error("Enter a job id first (or pick one in the jobs list).", print_exception=False)
        try:
            with upgraded_sessions(self.settings.database_url)() as session:
                saved = None
                if review is not None:
                    saved = set_review(session, job_id, *review)
                    session.commit()
                item = self._item(session, job_id, saved)
        except (LookupError, ReviewError) as exc:  # unknown job or path, a label the model does not have
            raise gr.Error(str(exc), print_exception=False) from exc
        except SQLAlchemyError as exc:
            raise gr.Error(f"Cannot read the results database: {exc}", print_exception=False) from exc
        return self._shown(item, _describe(saved) if saved else "")

    @staticmethod
    def _item(session: Any, job_id: str, saved: dict[str, Any] | None) -> dict[str, Any]:
        from db.results import find_job
        from db.reviews import job_labels, next_to_review, review_progress, reviewed_accuracy

        job = find_job(session, job_id)
        progress, accuracy = review_progress(session, job.id), reviewed_accuracy(session, job.id)
        row = next_to_review(session, job.id, top_k=TOP) or {}
        return {
            "job_id": job.id, "file": row.get("path"), "label": row.get("label"),
            "confidence": row.get("confidence"), "top_k": row.get("top_k", []),
            "labels": job_labels(session, job), "reviewed": progress["reviewed"], "total": progress["total"],
            "progress": progress["text"], "accuracy": accuracy["text"],
            "last": {("file" if k == "path" else k): v for k, v in saved.items()} if saved else None,
        }

    def _shown(self, item: dict[str, Any], note: str) -> tuple[np.ndarray | None, str, str, dict]:
        image = None
        if item["file"] is not None:
            try:
                image = load_thumbnail(item["file"], REVIEW_SIDE, self.settings.max_image_pixels)
            except ImageError as exc:  # moved or changed since the job: it can still be skipped
                note = f"{note}\n\n**Cannot show this image:** {exc}".strip()
        return image, item["file"] or "", status_markdown(item, note), item

    def next(self, job_id: str) -> tuple[np.ndarray | None, str, str, dict]:
        """The job's unreviewed image with the lowest confidence (API: /review_next)."""
        return self._open(job_id, None)

    def set(self, job_id: str, path: str, label: str | None, request: gr.Request
            ) -> tuple[np.ndarray | None, str, str, dict]:
        """Store `label` (NONE_OF_THESE: none of these) for `path`, then show the next image (API: /review_set)."""
        path = (path or "").strip()
        if not path:
            raise gr.Error("No image to review: load the job's next image first.", print_exception=False)
        if not label:
            raise gr.Error(f"Pick a label (or {NONE_OF_THESE!r} for none of these).", print_exception=False)
        shown = self._open(job_id, (path, None if label == NONE_OF_THESE else label, reviewer_of(request)))
        log_write(request, "review_set", job_id=(job_id or "").strip(), file=path, label=label)  # once stored
        return shown


def controls(item: dict[str, Any]) -> list[Any]:
    """The accept, five pick and dropdown updates for the image now shown."""
    top = item.get("top_k") or []
    ready = item.get("file") is not None
    accept = gr.Button(f"Enter: accept {top[0][0]}" if ready and top else "Enter: accept", interactive=ready)
    picks = [gr.Button(f"{k + 1}: {top[k][0]} ({top[k][1]:.0%})" if k < len(top) else f"{k + 1}",
                       visible=ready and k < len(top)) for k in range(TOP)]
    return [accept, *picks, gr.Dropdown(choices=[*item.get("labels", []), NONE_OF_THESE], value=None)]


def review_view(view: ReviewView, job_id: gr.Textbox) -> None:
    """The Review tab, reading the Batch tab's job id; it loads the next image whenever it is opened."""
    with gr.Tab("Review") as tab, gr.Column(elem_id="review-view"):
        gr.HTML(KEYS_HELP, js_on_load=KEYS_JS, elem_id="review-keys")
        status = gr.Markdown(label="status", elem_id="review-status")
        with gr.Row():
            image = gr.Image(label="Image", type="numpy", format="jpeg", interactive=False, height=520, scale=3,
                             elem_id="review-image")
            with gr.Column(scale=2):
                path = gr.Textbox(label="Path (as stored for the job)", interactive=False, elem_id="review-path")
                accept = gr.Button("Enter: accept", variant="primary", elem_id="review-accept")
                picks = [gr.Button(f"{k + 1}", elem_id=f"review-pick-{k + 1}", visible=False) for k in range(TOP)]
                skip = gr.Button("0 / n: none of these / skip", variant="stop", elem_id="review-skip")
                with gr.Row():
                    label = gr.Dropdown(label="Any label", allow_custom_value=True, scale=3, elem_id="review-label")
                    save = gr.Button("Save", scale=1)
                load = gr.Button("Reload the next image", size="sm")
        item = gr.JSON(label="item", visible=False)

    shown = [image, path, status, item]
    page = [*shown, accept, *picks, label]

    def page_next(job: str) -> list[Any]:
        found = view.next(job)
        return [*found, *controls(found[3])]

    def page_set(job: str, where: str, chosen: str | None, request: gr.Request) -> list[Any]:
        found = view.set(job, where, chosen, request)
        return [*found, *controls(found[3])]

    def page_pick(rank: int) -> Callable[..., list[Any]]:  # rank 0: the model's own label (Enter)
        def pick(job: str, where: str, current: dict | None, request: gr.Request) -> list[Any]:
            top = (current or {}).get("top_k") or []
            if rank >= len(top):
                raise gr.Error(f"This image has no label number {rank + 1}.", print_exception=False)
            return page_set(job, where, top[rank][0], request)
        return pick

    def page_skip(job: str, where: str, request: gr.Request) -> list[Any]:
        return page_set(job, where, NONE_OF_THESE, request)

    private: dict[str, Any] = {"api_visibility": "private", "outputs": page}
    tab.select(page_next, job_id, **private)
    load.click(page_next, job_id, **private)
    accept.click(page_pick(0), [job_id, path, item], **private)
    for k, button in enumerate(picks):
        button.click(page_pick(k), [job_id, path, item], **private)
    skip.click(page_skip, [job_id, path], **private)
    save.click(page_set, [job_id, path, label], **private)
    gr.on([], view.next, job_id, shown, api_name="review_next")
    gr.on([], view.set, [job_id, path, label], shown, api_name="review_set")
