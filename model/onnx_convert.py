"""Keras (TensorFlow backend) to ONNX with tf2onnx, and the parity check a conversion must pass to be kept.

Importing this module imports neither TensorFlow nor tf2onnx.
"""

from __future__ import annotations

import logging

import numpy as np

ONNX_OPSET = 17  # run by every ORT build of the last years, OpenVINO and TensorRT alike
PARITY_ATOL = 1e-4  # a conversion whose probabilities differ more from TensorFlow's is refused
PROBE_BATCH = 2


class ConversionError(RuntimeError):
    """The model cannot be converted here (tf2onnx missing), or its conversion does not match TensorFlow."""


def converter_version() -> str:
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
        raise ConversionError("converting to ONNX needs tf2onnx and onnx: pip install -r requirements.txt") from exc
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
        raise ConversionError(f"ONNX conversion does not match TensorFlow (max |dp| {diff:.2e} > {atol})")
    return diff
