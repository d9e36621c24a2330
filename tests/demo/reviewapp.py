"""The demo on a results database of its own, with jobs fabricated on real image files (no broker, no model run),
for the Review and Compare tests over HTTP and in the browser."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.databases import LABELS, row
from tests.helpers.images import write_good_images


@dataclass
class ReviewApp:
    url: str
    database_url: str
    folder: Path  # the images of the fabricated jobs
    app: object

    def close(self) -> None:
        self.app.close()


def real_files(folder: Path, confidences: list[float], photos: list[Path] | None = None) -> list[Path]:
    """One image file per confidence: copies of `photos` when given (real photos look right in a screenshot),
    else small generated images."""
    if photos:
        folder.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(p, folder / f"{i:02d}_{p.name}")) for i, p in zip(range(len(confidences)), photos,
                                                                                    strict=False)]
    return write_good_images(folder, len(confidences), prefix="shot", seed=30)


def add_photo_job(sessions, job_id: str, files: list[Path], labels: list[str], confidences: list[float], *,
                  version: str = "v-old", model_labels: list[str] = LABELS, total: int | None = None,
                  top_k: list[list] | None = None) -> None:
    """A job over real files, written as the batch path writes one (`db.crud`). Each file's hash is made from its
    name, so a second job on the same files matches it. `total` above the rows: a job still running. `top_k`: each
    file's top-k as [[label, confidence], ...] (default: its label, then the model's next labels sharing the rest)."""
    from db import crud

    rows = [row(str(f), label, c, f"h-{f.name}") for f, label, c in zip(files, labels, confidences, strict=True)]
    for i, r in enumerate(rows):
        rest = [x for x in model_labels if x != r["label"]][:4]
        r["top_k"] = top_k[i] if top_k else [[r["label"], r["confidence"]]] + [
            [x, (1 - r["confidence"]) / len(rest)] for x in rest]
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=version, labels=model_labels, input_size=32)
        crud.create_job(session=session, job_id=job_id, folder=str(files[0].parent), recursive=False,
                        model_dir="/m", model_version=version, total=total or len(rows))
        crud.insert_predictions(session=session, rows=[{**r, "job_id": job_id, "model_version": version}
                                                       for r in rows])
        crud.refresh_job(session=session, job_id=job_id)


def finish_job(sessions, job_id: str, file: Path, label: str, confidence: float) -> None:
    """The last row of a running job arrives, as a worker's chunk would write it."""
    from db import crud

    with sessions() as session, session.begin():
        crud.insert_predictions(session=session, rows=[{**row(str(file), label, confidence, f"h-{file.name}"),
                                                        "job_id": job_id, "model_version": "v-old"}])
        crud.refresh_job(session=session, job_id=job_id)


def start_demo(database_url: str, folder: Path, tmp_path: Path, auth: tuple[str, str] | None = None) -> ReviewApp:
    """The demo with no model bundle (the review needs none) and no reachable broker, serving `database_url`."""
    import demo
    from settings import Settings
    from tests.helpers.processes import free_port

    settings = Settings(database_url=database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        demo_allowed_roots=str(folder))
    app = demo.build_demo(tmp_path / "no-model", settings=settings)
    demo.launch(app, settings, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True, auth=auth)
    return ReviewApp(app.local_url, database_url, folder, app)
