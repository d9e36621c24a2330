"""One settings object for every role (demo, workers, training, reports), read from the environment.

Twelve-factor style: each field can be overridden by an environment variable of the same name
(`REDIS_URL`, `DATABASE_URL`, `MODEL_DIR`, ...); the defaults below make a fresh clone work with
no external service (SQLite next to the repo, Redis on localhost). Only entry points (the demo, the worker's
tasks, the command lines) read it; the core takes plain values, whose defaults are the ones used here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from model.bundle import SHIPPED_MODEL_DIR
from model.images import DEFAULT_MAX_PIXELS
from model.predict import BATCH_SIZE, TOP_K, UNCERTAIN_BELOW
from model.runtimes import AUTO

__all__ = ["ROOT", "SHIPPED_MODEL_DIR", "Settings", "get_settings"]

ROOT = Path(__file__).resolve().parent  # the checkout (the package is installed editable: data/ lives here)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # Classifier core
    model_dir: str = str(SHIPPED_MODEL_DIR)
    # Taught bundles (train.teach), one folder per model_version: the demo's model picker lists them, and in
    # compose the demo and the workers share this folder as a volume, so a job can run on a taught model.
    models_dir: str = str(ROOT / "data" / "models")
    top_k: int = TOP_K
    batch_size: int = BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard (Pillow warns at 89M)
    runtime: str = AUTO  # tf | onnx | auto (= onnx when onnxruntime is installed); see model/runtimes.py
    inference_threads: int = 0  # intra-op threads per process; 0 = the cores this process may use (CPU affinity)
    runtime_cache_dir: str = ""  # ONNX conversions when a bundle folder is read-only; "" = ~/.cache/...

    # Batch path
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = f"sqlite:///{ROOT / 'data' / 'results.db'}"
    chunk_size: int = 64  # images per Celery task; small enough to finish well inside the visibility timeout
    visibility_timeout_s: int = 3600
    stall_warning_s: int = 60  # `submit --wait` explains a job that made no progress for this long
    # A task retries database and broker errors with exponential backoff (2, 4, 8 ... s, at most TASK_RETRY_MAX_S,
    # each cut by up to half at random): 12 retries wait 4 to 8 minutes in all, a database restart or failover.
    task_max_retries: int = 12
    task_retry_max_s: float = 60.0
    # Healing (jobs.heal): every HEAL_CHECK_S one worker of the fleet looks for unfinished jobs with files
    # without a row, no chunk queued or in flight and no new row for HEAL_AFTER_S, and queues those files again;
    # a job that stalls again after HEAL_MAX heals ends failed with the reason.
    heal_after_s: float = 300.0
    heal_check_s: float = 30.0
    heal_max: int = 3

    # Demo
    demo_host: str = "127.0.0.1"
    demo_port: int = 7860
    demo_auth: str | None = None  # "user:pass"
    # Writes (folder jobs, reviews, teaching) on a demo other machines can reach (beyond loopback, --share, a Space)
    # without DEMO_AUTH: off unless this says the network is private (webui/access.py).
    demo_open_writes: bool = False
    demo_allowed_roots: str = str(ROOT / "data")  # os.pathsep-separated folders the Batch tab may read
    demo_uncertain_below: float = UNCERTAIN_BELOW
    demo_max_batch_size: int = 8  # concurrent requests that share one forward pass
    demo_max_file_size: str = "20mb"  # uploads above this are refused by Gradio before they reach the model
    demo_queue_size: int = 64  # requests waiting beyond this get "queue full" instead of a long wait
    # Gradio keeps ~76 KB per session, and an API call without a session_hash makes a new one: this bounds that
    # memory (the oldest sessions go first; the demo keeps no per-user state worth keeping).
    demo_session_capacity: int = 1000
    # How the demo names its classes to a visitor: "This doesn't look like any of the 21 fruits I know".
    demo_things: str = "fruits"
    # The Upload tab (webui/upload.py), classified in the demo process: what one upload may hold. Over any of these
    # the upload is refused as a whole, with the reason; DEMO_MAX_FILE_SIZE still bounds each file (a .zip too).
    demo_upload_max_files: int = 50  # images per upload, a .zip's entries counted
    demo_upload_max_bytes: int = 100_000_000  # all uploaded files together, as uploaded
    demo_upload_max_pixels: int = 600_000_000  # width x height summed over the images (50 12-MP photos), from headers
    demo_upload_max_zip_entries: int = 200  # entries in a .zip's directory, folders and hidden files included
    demo_upload_max_zip_bytes: int = 200_000_000  # what a .zip's entries expand to, in total
    demo_upload_max_zip_ratio: float = 50.0  # expanded size / the .zip's size; photos barely compress (~1x)
    # The Teach view (webui/teach.py) takes this many photos per upload (a class of 20 photos for each of 21 fruits);
    # its budgets of bytes, pixels and .zip entries grow by the same factor over DEMO_UPLOAD_MAX_FILES.
    demo_teach_max_files: int = 500

    def classifier_options(self) -> dict[str, Any]:
        """`load_classifier`'s keyword arguments from this configuration (how it runs, what it decodes)."""
        return {"runtime": self.runtime, "threads": self.inference_threads,
                "shared_cache_dir": self.runtime_cache_dir or None, "max_pixels": self.max_image_pixels}


@lru_cache
def get_settings() -> Settings:
    return Settings()
