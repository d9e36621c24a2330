"""Inference runtimes behind `Classifier.forward`: which one runs, and its batch function.

`make_forward` returns a batch function with the same contract for every runtime (numpy float32
(N, H, W, 3) raw pixels in, numpy probabilities out), so no caller knows which one runs.

- `tf`: the Keras model under a `tf.function` (`compile_forward`).
- `onnx`: the same network converted once to ONNX (`model.onnx_convert`, kept by `model.onnx_cache` beside the
  bundle, or in a shared cache folder when that one is read-only) and run by ONNX Runtime, on CUDA when
  `onnxruntime-gpu` is installed and a GPU answers, else on the CPU with one intra-op thread per core this
  process may use. Every fresh conversion is checked against TensorFlow on a probe batch before it is kept.
- `auto` (the default): `onnx` when onnxruntime is importable and the model has a place to keep its conversion,
  else `tf`. A failed conversion in `auto` falls back to `tf` with a warning.

Callers pass the runtime name, thread count and cache folders (the entry points take them from settings).
Importing this module imports neither TensorFlow nor ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.onnx_cache import default_cache_dir, onnx_file_name, open_or_build
from model.onnx_convert import ONNX_OPSET, check_parity, convert_to_onnx, converter_version

log = logging.getLogger(__name__)

ForwardFn = Callable[[np.ndarray], np.ndarray]

AUTO = "auto"
TF = "tf"
ONNX = "onnx"
RUNTIMES = (TF, ONNX)
ALIASES = {"tensorflow": TF, "keras": TF, "onnxruntime": ONNX, "ort": ONNX}
NOT_SHIPPED = {"openvino": "it measured no faster than ONNX Runtime on CPU (docs/runtimes.md)"}


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime exists but cannot run here (package missing, conversion failed)."""


class UnknownRuntimeError(ValueError):
    """The requested runtime name is not one this project knows."""


# -- selection ---------------------------------------------------------------------------------------------
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


def resolve_runtime(name: str = AUTO, *, can_cache: bool = True) -> str:
    """'tf' or 'onnx' for a requested name; raises a clear error otherwise.

    `can_cache` False (a model that lives only in memory, e.g. at the end of training) keeps `auto` on
    TensorFlow: a conversion there would be paid for one evaluation and never reused.
    """
    key = _normalise(name)
    if key == AUTO:
        return ONNX if can_cache and onnxruntime_available() else TF
    if key in NOT_SHIPPED:
        raise RuntimeUnavailableError(f"the {key!r} runtime is not shipped: {NOT_SHIPPED[key]}. "
                                      "Use runtime 'onnx' (or 'auto').")
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
def inference_threads(configured: int = 0) -> int:
    """Intra-op threads for one process: `configured` when > 0, else the cores this process may use.

    The CPU affinity (taskset, a Celery child pinned to some cores, Kubernetes' static CPU manager) is what a
    process is given; `os.cpu_count()` would oversubscribe the machine when several workers share it.
    """
    if configured > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_tf_threads(threads: int) -> None:
    """Apply an explicit thread count to TensorFlow, which must hear it before it starts its pools.

    With 0 TensorFlow already sizes its pools from the CPU affinity, so nothing is changed.
    """
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TensorFlow already initialised in this process (a second classifier): keep its pools
        log.debug("TensorFlow threads already fixed; %d threads not applied to TF", threads)


# -- the forward function ------------------------------------------------------------------------------------
def make_forward(model, input_size: int, model_version: str, runtime: str = AUTO,
                 cache_dir: str | os.PathLike | None = None, variant: str = "", *,
                 shared_cache_dir: str | os.PathLike | None = None, threads: int = 0) -> tuple[ForwardFn, str]:
    """(forward function, runtime name) for a Keras model.

    `cache_dir` is the model's own folder (its bundle), where its conversion is kept and older ones replaced;
    `shared_cache_dir` is where conversions go when that folder is read-only or absent (None: the user's cache).
    With neither, `auto` stays on TensorFlow. A model with several outputs gets a forward returning a list of
    arrays; `variant` names such a model's conversion apart from the plain classifier's ("cam"), same weights.
    """
    requested = _normalise(runtime)
    name = resolve_runtime(requested, can_cache=cache_dir is not None or shared_cache_dir is not None)
    if name == ONNX:
        try:
            session = ensure_onnx_session(model, input_size, model_version, cache_dir, variant,
                                          shared_cache_dir=shared_cache_dir, threads=threads)
            return session_forward(session, threads), ONNX
        except Exception as exc:  # noqa: BLE001 - in auto mode any conversion failure means "use TF"
            if requested != AUTO:
                if isinstance(exc, RuntimeUnavailableError):
                    raise
                raise RuntimeUnavailableError(f"runtime 'onnx' could not be prepared: {exc}") from exc
            log.warning("ONNX Runtime unavailable for this model (%s); using TensorFlow", exc)
    log.info("TensorFlow runtime (%s requested)", requested)
    return compile_forward(model, input_size), TF


def compile_forward(model, input_size: int) -> ForwardFn:
    """A compiled batch forward pass: numpy float32 (N, H, W, 3) in, numpy probabilities out.

    On TensorFlow a `tf.function` with a batch-agnostic signature traces once for every batch size;
    other Keras backends go through `predict_on_batch`, which they compile themselves.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return lambda batch: _numpy(fn(tf.constant(batch)))
    return lambda batch: _numpy(model.predict_on_batch(batch))


def _numpy(out):
    """One array, or a list of arrays for a model with several outputs (the Grad-CAM model)."""
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def session_forward(session, threads: int = 0) -> ForwardFn:
    """The session as a batch function: one array for a one-output model, else the list of outputs."""
    input_name = session.get_inputs()[0].name
    single = len(session.get_outputs()) == 1
    log.info("ONNX Runtime: providers %s, %d intra-op threads", session.get_providers(), inference_threads(threads))

    def forward(batch: np.ndarray) -> np.ndarray | list[np.ndarray]:
        outputs = session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return outputs[0] if single else outputs

    return forward


def providers() -> list[str]:
    """CUDA first when the installed build has it (onnxruntime-gpu), with the CPU as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def create_session(model: str | os.PathLike | bytes, threads: int = 0):
    """An ONNX Runtime session (from a file or serialized bytes) on this process's cores; raises if the
    model cannot be loaded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = inference_threads(threads)
    options.inter_op_num_threads = 1  # one chain of ops (a CNN): parallelism is inside each op
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between ops: the pipeline decodes the next batch in threads beside the forward pass, and
    # with spinning threads on an oversubscribed CPU throughput halved (226 vs 468 img/s, 2 cores, 32px).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    wanted = providers()
    try:
        return ort.InferenceSession(source, sess_options=options, providers=wanted)
    except Exception:
        if wanted == ["CPUExecutionProvider"]:
            raise
        # A GPU build on a machine without a usable GPU: the CPU provider still works.
        log.warning("CUDA provider failed; ONNX Runtime falls back to the CPU", exc_info=True)
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def ensure_onnx_session(model, input_size: int, model_version: str, cache_dir: str | os.PathLike | None = None,
                        variant: str = "", *, shared_cache_dir: str | os.PathLike | None = None, threads: int = 0):
    """An ONNX Runtime session for `model`, converting it only when no valid cached conversion exists."""
    own = Path(cache_dir) if cache_dir is not None else None
    folders = ([own] if own is not None else []) + [default_cache_dir(shared_cache_dir)]

    def build() -> tuple[bytes, object, dict]:
        data = convert_to_onnx(model, input_size)
        session = create_session(data, threads)
        check_parity(model, session, input_size)
        return data, session, {"opset": ONNX_OPSET, "converter": converter_version()}

    return open_or_build(onnx_file_name(model_version, input_size, variant), folders, model_version, input_size,
                         open_file=lambda path: create_session(path, threads), build=build, own_folder=own)
