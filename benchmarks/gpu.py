"""GPU benchmark: `python -m benchmarks.gpu [--images 512] [--batch-sizes 64 128] [--input-size 224]`.

The worker's path end to end on whatever GPU is present, on the same images and model in one run:
  - which runtime a worker picks here (RUNTIME / settings.runtime), and whether that one runs on the GPU;
  - for each GPU runtime found: TensorFlow with a visible GPU (fp32, and mixed precision: the same weights in a
    Keras `mixed_float16` model, softmax in float32), ONNX Runtime with CUDAExecutionProvider (fp32);
  - for each, at every batch size: img/s of the bare forward pass on pre-decoded batches, and of the
    folder-to-database pipeline (`jobs.submit.submit_folder`, then the worker's own `process_chunk`: decode,
    resize, batched forward, rows written to SQLite; inline, no broker);
  - proof that the forward pass ran on the GPU: TensorFlow's peak GPU memory during it
    (`tf.config.experimental.get_memory_info`), ONNX Runtime's session providers (CUDA first, not a fallback);
  - mixed precision against fp32: top-1 agreement and the largest probability difference.
Model: --model BUNDLE, else a fresh (untrained) DenseNet121 at --input-size (224), 10 classes.
Exit 0: measured; 1: a runtime said GPU but its forward pass did not run there; 2: no GPU here (a message says
what is installed and what a GPU machine needs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from benchmarks.batch import bench_pipeline_inline
from benchmarks.common import fresh_bundle, write_images
from benchmarks.runtimes import bench_forward
from settings import get_settings

NO_GPU_HINT = ('A GPU machine needs the NVIDIA driver and one of: pip uninstall -y tensorflow-cpu && pip install '
               '"tensorflow[and-cuda]==2.21.0" (then RUNTIME=tf), or onnxruntime-gpu in place of onnxruntime '
               '(docs/deployment.md#gpu-workers).')


def _installed(*names: str) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found) or "none of " + ", ".join(names)


def find_gpus() -> dict[str, str]:
    """{runtime: what it sees} for each runtime that can run on a GPU here; empty when none can."""
    from model.runtimes import onnxruntime_available
    from worker.tasks import enable_gpu_memory_growth

    found = {}
    enable_gpu_memory_growth()  # as a worker does before its model loads
    import tensorflow as tf

    if gpus := tf.config.list_physical_devices("GPU"):
        found["tf"] = ", ".join(g.name for g in gpus)
    if onnxruntime_available():
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            found["onnx"] = "CUDAExecutionProvider"
    return found


def no_gpu_message() -> str:
    providers = "not installed"
    try:
        import onnxruntime as ort

        providers = str(ort.get_available_providers())
    except ImportError:
        pass
    return (f"no GPU here: TensorFlow lists no GPU ({_installed('tensorflow', 'tensorflow-cpu')}) and ONNX Runtime "
            f"has no CUDAExecutionProvider ({_installed('onnxruntime', 'onnxruntime-gpu')}: providers "
            f"{providers}).\n{NO_GPU_HINT}")


def tf_peak_gpu_mb(forward, batch: np.ndarray) -> float:
    """TensorFlow's peak memory on GPU:0 during one forward pass, in MB (0: it ran elsewhere)."""
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("GPU:0")
    forward(batch)
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def mixed_precision_twin(model):
    """The same network and weights as a Keras `mixed_float16` model (float16 compute, float32 softmax)."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        twin = keras.models.clone_model(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    twin.set_weights(model.get_weights())
    return twin


def gpu_classifiers(bundle: Path, found: dict[str, str]) -> dict[str, tuple[object, str, bool]]:
    """{name: (classifier, proof, ran on the GPU)} for every GPU runtime found."""
    from model.predict import Classifier, load_classifier
    from model.runtimes import compile_forward, ensure_onnx_session, session_forward

    out: dict[str, tuple[object, str, bool]] = {}
    base = load_classifier(bundle, runtime="tf")
    probe = np.zeros((8, base.input_size, base.input_size, 3), np.float32)
    if "tf" in found:
        twin = mixed_precision_twin(base.model)
        mixed = Classifier(twin, base.config, forward_fn=compile_forward(twin, base.input_size))
        for name, clf in (("tf fp32", base), ("tf mixed_float16", mixed)):
            peak = tf_peak_gpu_mb(clf.forward, probe)
            out[name] = (clf, f"TensorFlow's peak memory on GPU:0 during a forward pass {peak:.0f} MB", peak > 0)
    if "onnx" in found:
        session = ensure_onnx_session(base.model, base.input_size, base.model_version, bundle)
        ort_clf = Classifier(base.model, base.config, forward_fn=session_forward(session))
        ort_clf.forward(probe)
        used = session.get_providers()
        out["onnx fp32"] = (ort_clf, f"session providers {used}", used[0] == "CUDAExecutionProvider")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder (default: a fresh DenseNet121 at --input-size)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args(argv)

    found = find_gpus()
    if not found:
        print(no_gpu_message(), file=sys.stderr)
        return 2
    from db.migrate import upgrade
    from model.runtimes import resolve_runtime

    settings = get_settings()
    worker_runtime = resolve_runtime(settings.runtime)
    print(f"GPU runtimes: {found}; a worker here runs RUNTIME={settings.runtime} -> {worker_runtime}"
          + ("" if worker_runtime in found else " (on the CPU: set RUNTIME to one of the GPU runtimes)"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    bundle = Path(args.model) if args.model else fresh_bundle(tmp / "bundle", args.input_size)
    paths = write_images(tmp / "images", args.images)
    classifiers = gpu_classifiers(bundle, found)
    ok = True
    for name, (clf, proof, on_gpu) in classifiers.items():
        ok &= on_gpu
        print(f"{name}: {proof}: {'ran on the GPU' if on_gpu else 'NOT on the GPU'}", flush=True)
        for batch_size in args.batch_sizes:
            forward = bench_forward(clf, paths, batch_size)
            db_url = f"sqlite:///{tmp / name.replace(' ', '-')}-{batch_size}.db"
            upgrade(db_url)
            start = time.perf_counter()
            pipeline = bench_pipeline_inline(clf, bundle, tmp / "images", db_url, batch_size, 2 * batch_size)
            print(f"  {clf.input_size}px batch {batch_size:>4}: forward {forward:8.1f} img/s, pipeline (submit + "
                  f"process_chunk, SQLite) {pipeline:8.1f} img/s ({time.perf_counter() - start:.1f} s)", flush=True)
    if "tf" in found:
        batch, _ = classifiers["tf fp32"][0].preprocess(paths[:128])
        full, mixed = classifiers["tf fp32"][0].forward(batch), classifiers["tf mixed_float16"][0].forward(batch)
        agree = float(np.mean(full.argmax(1) == mixed.argmax(1)))
        print(f"mixed_float16 vs fp32 on {len(batch)} images: top-1 agrees on {agree:.1%}, largest probability "
              f"difference {float(np.abs(full - mixed).max()):.4f}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
