"""Inference runtimes behind `Classifier.forward`: TensorFlow (always there) or ONNX Runtime.

`make_forward` returns a batch function with the same contract for every runtime (numpy float32
(N, H, W, 3) raw pixels in, numpy probabilities out), so no caller knows which one runs.

- `tf`: the Keras model under a `tf.function` (`model.predict.compile_forward`).
- `onnx`: the same network converted once to ONNX (frozen graph -> tf2onnx) and run by ONNX Runtime, on CUDA
  when `onnxruntime-gpu` is installed and a GPU answers, else on the CPU with one intra-op thread per core
  this process may use.
- `auto` (the default, `RUNTIME` / `settings.runtime`): `onnx` when onnxruntime is importable and the model
  has a place to keep its conversion, else `tf`. A failed conversion in `auto` falls back to `tf` with a warning.

The conversion is cached as `model-<model_version>-<size>px.onnx` beside the bundle (or, when that folder
is read-only, in `settings.runtime_cache_dir` / `~/.cache/densenet121-classifier/onnx`), with a JSON sidecar
holding its sha256. It is written atomically (temp file + `os.replace`) under an exclusive `flock`, so a fleet
of worker processes sharing a folder converts once. A cache entry of another model version, or whose hash or
ONNX Runtime load fails, is rebuilt. Every fresh conversion is checked against TensorFlow on a probe batch
before it is kept.

Importing this module imports neither TensorFlow nor ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ForwardFn = Callable[[np.ndarray], np.ndarray]

AUTO = "auto"
TF = "tf"
ONNX = "onnx"
RUNTIMES = (TF, ONNX)
ALIASES = {"tensorflow": TF, "keras": TF, "onnxruntime": ONNX, "ort": ONNX}
ONNX_OPSET = 17  # run by every ORT build of the last years, OpenVINO and TensorRT alike
PARITY_ATOL = 1e-4  # a conversion whose probabilities differ more from TensorFlow's is refused
PROBE_BATCH = 2

OPENVINO_WHY = (
    "the 'openvino' runtime is not shipped: on a 2-core CPU it measured 40.3 img/s against ONNX Runtime's 39.8 "
    "(DenseNet121, 224px, batch 32), a 1% difference inside the noise, for a ~50 MB wheel, a second conversion "
    "path and a second parity surface. Use runtime 'onnx' (or 'auto')."
)


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime exists but cannot run here (package missing, conversion failed)."""


class UnknownRuntimeError(ValueError):
    """The requested runtime name is not one this project knows."""


# -- selection ---------------------------------------------------------------------------------------------
def _setting_runtime() -> str:
    from settings import get_settings

    return get_settings().runtime


def _normalise(name: str) -> str:
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def available_runtimes() -> list[str]:
    """The runtimes that can run in this environment, fastest first."""
    return ([ONNX] if onnxruntime_available() else []) + [TF]


def resolve_runtime(name: str | None = None, *, can_cache: bool = True) -> str:
    """'tf' or 'onnx' for a requested name (None: `settings.runtime`); raises a clear error otherwise.

    `can_cache` False (a model that lives only in memory, e.g. at the end of training) keeps `auto` on
    TensorFlow: a conversion there would be paid for one evaluation and never reused.
    """
    key = _normalise(name if name is not None else _setting_runtime())
    if key == AUTO:
        return ONNX if can_cache and onnxruntime_available() else TF
    if key == "openvino":
        raise RuntimeUnavailableError(OPENVINO_WHY)
    if key not in RUNTIMES:
        raise UnknownRuntimeError(
            f"unknown runtime {name!r}: choose one of {', '.join((AUTO, *RUNTIMES))} (RUNTIME / --runtime)"
        )
    if key == ONNX and not onnxruntime_available():
        raise RuntimeUnavailableError(
            "runtime 'onnx' needs ONNX Runtime, which is not installed: pip install -r requirements.txt "
            "(onnxruntime, onnx, tf2onnx), or choose runtime 'tf' / 'auto'"
        )
    return key


# -- threads -----------------------------------------------------------------------------------------------
def inference_threads() -> int:
    """Intra-op threads for one process: `settings.inference_threads`, else the cores this process may use.

    The CPU affinity (taskset, a Celery child pinned to some cores, Kubernetes' static CPU manager) is what a
    process is given; `os.cpu_count()` would oversubscribe the machine when several workers share it.
    """
    from settings import get_settings

    wanted = int(get_settings().inference_threads)
    if wanted > 0:
        return wanted
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_tf_threads() -> None:
    """Apply an explicit `inference_threads` to TensorFlow, which must hear it before it starts its pools.

    Without the setting TensorFlow already sizes its pools from the CPU affinity, so nothing is changed.
    """
    from settings import get_settings

    wanted = int(get_settings().inference_threads)
    if wanted <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, wanted))
    except RuntimeError:  # TensorFlow already initialised in this process (a second classifier): keep its pools
        log.debug("TensorFlow threads already fixed; inference_threads=%d not applied to TF", wanted)


# -- the forward function ------------------------------------------------------------------------------------
def make_forward(model, input_size: int, model_version: str, runtime: str | None = None,
                 cache_dir: str | os.PathLike | None = None, variant: str = "") -> tuple[ForwardFn, str]:
    """(forward function, runtime name) for a Keras model; `cache_dir` is where its conversion may live.

    A model with several outputs gets a forward returning a list of arrays; `variant` names such a model's
    conversion apart from the plain classifier's (say "cam" for the Grad-CAM model), same weights.
    """
    requested = _normalise(runtime if runtime is not None else _setting_runtime())
    name = resolve_runtime(requested, can_cache=cache_dir is not None)
    if name == ONNX:
        try:
            return onnx_forward(model, input_size, model_version, cache_dir, variant), ONNX
        except Exception as exc:  # noqa: BLE001 - in auto mode any conversion failure means "use TF"
            if requested != AUTO:
                if isinstance(exc, RuntimeUnavailableError):
                    raise
                raise RuntimeUnavailableError(f"runtime 'onnx' could not be prepared: {exc}") from exc
            log.warning("ONNX Runtime unavailable for this model (%s); using TensorFlow", exc)
    from model.predict import compile_forward

    log.info("TensorFlow runtime (%s requested)", requested)
    return compile_forward(model, input_size), TF


def onnx_forward(model, input_size: int, model_version: str,
                 cache_dir: str | os.PathLike | None = None, variant: str = "") -> ForwardFn:
    return session_forward(ensure_onnx_session(model, input_size, model_version, cache_dir, variant))


def session_forward(session) -> ForwardFn:
    """The session as a batch function: one array for a one-output model, else the list of outputs."""
    input_name = session.get_inputs()[0].name
    single = len(session.get_outputs()) == 1
    log.info("ONNX Runtime: providers %s, %d intra-op threads", session.get_providers(), inference_threads())

    def forward(batch: np.ndarray) -> np.ndarray | list[np.ndarray]:
        outputs = session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return outputs[0] if single else outputs

    return forward


def providers() -> list[str]:
    """CUDA first when the installed build has it (onnxruntime-gpu), with the CPU as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def create_session(path: str | os.PathLike | bytes, threads: int | None = None):
    """An ONNX Runtime session (from a file or serialized bytes) on this process's cores; raises if the
    model cannot be loaded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or inference_threads()
    options.inter_op_num_threads = 1  # one chain of ops (a CNN): parallelism is inside each op
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between ops: the pipeline decodes the next batch in threads beside the forward pass, and
    # with spinning threads on an oversubscribed CPU throughput halved (226 vs 468 img/s, 2 cores, 32px).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = providers()
    try:
        return ort.InferenceSession(_source(path), sess_options=options, providers=wanted)
    except Exception:
        if wanted == ["CPUExecutionProvider"]:
            raise
        # A GPU build on a machine without a usable GPU: the CPU provider still works.
        log.warning("CUDA provider failed; ONNX Runtime falls back to the CPU", exc_info=True)
        return ort.InferenceSession(_source(path), sess_options=options, providers=["CPUExecutionProvider"])


def _source(model: str | os.PathLike | bytes) -> str | bytes:
    return model if isinstance(model, bytes) else str(model)


# -- the conversion cache ----------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """Where conversions go when the bundle folder is read-only (or there is no bundle)."""
    from settings import get_settings

    configured = get_settings().runtime_cache_dir
    if configured:
        return Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "densenet121-classifier" / "onnx"


def onnx_file_name(model_version: str, input_size: int, variant: str = "") -> str:
    # The input size is part of the key: the weights (and so model_version) of a DenseNet do not depend on it.
    return f"model-{model_version}-{int(input_size)}px{'-' + variant if variant else ''}.onnx"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _writable(folder: Path) -> bool:
    """Can files be created here? (os.access lies for root and on read-only mounts, so try it.)"""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def cache_problem(path: Path, model_version: str, input_size: int) -> str | None:
    """Why the cached file cannot be used as it is (None: the sidecar and the bytes agree)."""
    if not path.is_file():
        return "missing"
    try:
        meta = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return "no readable sidecar"
    if meta.get("model_version") != model_version or meta.get("input_size") != int(input_size):
        return f"stale (made for {meta.get('model_version')} at {meta.get('input_size')}px)"
    if meta.get("sha256") != _sha256(path):
        return "corrupt (sha256 mismatch)"
    return None


def _try_open(path: Path, model_version: str, input_size: int):
    """A session on a valid cached file, or (None, reason)."""
    problem = cache_problem(path, model_version, input_size)
    if problem:
        return None, problem
    try:
        return create_session(path), None
    except Exception as exc:  # noqa: BLE001 - any load failure means "rebuild it"
        return None, f"corrupt (ONNX Runtime cannot load it: {exc})"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes; the kernel drops it if the holder dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, at worst two processes convert
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_cached(path: Path, data: bytes, model_version: str, input_size: int, **meta) -> None:
    """Store a model file and then its sidecar (model version, input size, sha256), each atomically."""
    _atomic_write(path, data)
    meta = {"model_version": model_version, "input_size": int(input_size), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), **meta}
    _atomic_write(_sidecar(path), (json.dumps(meta, indent=2) + "\n").encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; workers running as other users must read it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_onnx_session(model, input_size: int, model_version: str, cache_dir: str | os.PathLike | None = None,
                        variant: str = ""):
    """An ONNX Runtime session for `model`, converting it only when no valid cached conversion exists."""
    name = onnx_file_name(model_version, input_size, variant)
    candidates = [Path(cache_dir)] if cache_dir is not None else []
    candidates.append(default_cache_dir())
    for folder in candidates:  # a valid conversion anywhere (say, shipped in a read-only image) is used as is
        session, _ = _try_open(folder / name, model_version, input_size)
        if session is not None:
            return session
    folder = next((f for f in candidates if _writable(f)), None)
    if folder is None:
        raise RuntimeUnavailableError(f"no writable folder for the ONNX conversion: {', '.join(map(str, candidates))}")
    path = folder / name
    with file_lock(folder / f".{name}.lock"):
        session, problem = _try_open(path, model_version, input_size)  # another process may have just made it
        if session is not None:
            return session
        log.info("converting the model to ONNX (%s): %s", problem, path)
        _remove_leftovers(folder, name, model_version, bundle=cache_dir is not None and folder == Path(cache_dir))
        start = time.perf_counter()
        data = convert_to_onnx(model, input_size)
        session = create_session(data)
        check_parity(model, session, input_size)
        seconds = round(time.perf_counter() - start, 1)
        write_cached(path, data, model_version, input_size, opset=ONNX_OPSET, converter=_converter_version(),
                     seconds=seconds)
        log.info("ONNX conversion written in %.1f s: %s", seconds, path)
        return session


def _remove_leftovers(folder: Path, name: str, model_version: str, bundle: bool) -> None:
    """Temp files of a writer that died, and (in a bundle folder) conversions of older weights."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    if not bundle:
        return  # the shared cache folder holds other bundles' conversions
    for old in folder.glob("model-*.onnx"):
        if not old.name.startswith(f"model-{model_version}-"):
            for stale in (old, _sidecar(old)):
                with contextlib.suppress(OSError):
                    stale.unlink()


def _converter_version() -> str:
    try:
        import tf2onnx

        return f"tf2onnx {tf2onnx.__version__}"
    except ImportError:
        return "unknown"


def convert_to_onnx(model, input_size: int) -> bytes:
    """Serialized ONNX of a Keras (TensorFlow backend) model taking (N, S, S, 3) float32 'image'.

    The variables are frozen into constants first: converting the tf.function directly turns the
    Normalization layer's mean and variance into extra graph inputs instead of initializers.
    """
    try:
        import tf2onnx
    except ImportError as exc:
        raise RuntimeUnavailableError("converting to ONNX needs tf2onnx and onnx: pip install -r requirements.txt"
                                      ) from exc
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    quiet = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    levels = [q.level for q in quiet]
    for q in quiet:  # tf2onnx narrates every rewrite at INFO/WARNING; failures still raise
        q.setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs],
            opset=ONNX_OPSET,
        )
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    return proto.SerializeToString()


def check_parity(model, session, input_size: int, atol: float = PARITY_ATOL) -> float:
    """Largest |onnx - tf| over every output on a fixed probe batch; raises when it exceeds `atol` (a broken
    conversion). Probabilities are compared absolutely; other outputs (feature maps) relative to their range."""
    probe = np.random.default_rng(0).uniform(0, 255, (PROBE_BATCH, input_size, input_size, 3)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: probe})
    want = model(probe, training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    diff = 0.0 if len(got) == len(want) else float("inf")
    for g, w in zip(got, want, strict=False):
        scale = max(1.0, float(np.max(np.abs(w)))) if w.ndim > 2 else 1.0
        diff = max(diff, float(np.max(np.abs(g - w))) / scale if g.shape == w.shape else float("inf"))
    if not diff <= atol:
        raise RuntimeUnavailableError(f"ONNX conversion does not match TensorFlow (max |dp| {diff:.2e} > {atol})")
    return diff
