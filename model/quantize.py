"""int8 static quantization of a bundle's ONNX model, kept only when it agrees with fp32 (runtime `onnx-int8`).

    python -m model.quantize --model model/fruits-densenet121 --calibration DATA/train --val DATA/val

Calibration images come from the training set (a fixed random sample); activations are quantized to uint8 and
weights to int8 per channel (QDQ format), with the 7-bit weight range on CPUs without VNNI, whose AVX2 int8
kernels can otherwise saturate; the head (logits, softmax) stays in float. The result is written beside the
bundle as `model-<version>-<size>px.int8.onnx` only if its top-1 equals the fp32 model's on at least
`--min-agreement` (99.5%) of the validation images.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from model import runtimes
from model.images import ImageError, is_image_file, load_images

MIN_AGREEMENT = 0.995
log = logging.getLogger(__name__)


class QuantizationRejectedError(RuntimeError):
    """The int8 model disagrees with fp32 on too many validation images."""


def image_files(folder: str | os.PathLike) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def decode(paths: list[Path], size: int) -> np.ndarray:
    good = [x for x in load_images(paths, size) if not isinstance(x, ImageError)]
    return np.stack(good).astype(np.float32)


def has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def head_nodes(path: Path) -> list[str]:
    """The classifier head (logits and softmax) stays in float: a uint8 softmax output would round every
    confidence to a multiple of 1/255, and the head costs nothing next to the convolutions."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Softmax", "MatMul", "Gemm")]


def predict(session, x: np.ndarray, batch: int = 32) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def fp32_model(bundle: str | os.PathLike) -> tuple[str, int, Path]:
    """(model_version, input size, path) of the bundle's valid fp32 conversion, converting when there is none."""
    from model.bundle import BundleConfig

    config = BundleConfig.read(bundle)
    version, size = config.model_version, int(config.input_size)
    if version:
        for folder in (Path(bundle), runtimes.default_cache_dir()):
            path = folder / runtimes.onnx_file_name(version, size)
            if runtimes.cache_problem(path, version, size) is None:
                return version, size, path
    from model.predict import load_classifier

    clf = load_classifier(bundle, runtime="onnx")  # converts beside the bundle (or in the cache dir)
    version = clf.model_version
    for folder in (Path(bundle), runtimes.default_cache_dir()):
        path = folder / runtimes.onnx_file_name(version, size)
        if path.is_file():
            return version, size, path
    raise FileNotFoundError(f"no ONNX conversion found for {bundle}")


def quantize_bundle(bundle: str | os.PathLike, calibration: str | os.PathLike, val: str | os.PathLike | None,
                    n_calibration: int = 256, min_agreement: float = MIN_AGREEMENT, seed: int = 0) -> dict:
    """Quantize, compare with fp32 on `val`, and store the int8 model if it agrees; returns the figures."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    version, size, fp32 = fp32_model(bundle)
    files = image_files(calibration)
    random.Random(seed).shuffle(files)
    calib = decode(files[:n_calibration], size)
    input_name = runtimes.create_session(fp32).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.batches, None)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=not has_vnni(), nodes_to_exclude=head_nodes(pre))
        data = out.read_bytes()
    figures = {"calibration_images": len(calib), "seconds": round(time.perf_counter() - start, 1),
               "reduce_range": not has_vnni()}
    if val is not None:
        x = decode(image_files(val), size)
        p32 = predict(runtimes.create_session(fp32), x)
        p8 = predict(runtimes.create_session(data), x)
        agree = float(np.mean(p32.argmax(1) == p8.argmax(1)))
        figures.update(val_images=len(x), agreement=agree, max_abs_prob_diff=float(np.abs(p32 - p8).max()))
        if agree < min_agreement:
            raise QuantizationRejectedError(
                f"int8 top-1 agrees with fp32 on {agree:.2%} of {len(x)} images, below {min_agreement:.1%}: not kept")
    folder = Path(bundle) if runtimes._writable(Path(bundle)) else runtimes.default_cache_dir()
    runtimes.write_cached(folder / runtimes.onnx_file_name(version, size, int8=True), data, version, size,
                          **figures)
    return {**figures, "path": str(folder / runtimes.onnx_file_name(version, size, int8=True))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.quantize", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--calibration", required=True, help="training images (any folder layout)")
    p.add_argument("--val", required=True, help="validation images: the agreement check")
    p.add_argument("--images", type=int, default=256, help="calibration images (default 256)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        figures = quantize_bundle(args.model, args.calibration, args.val, args.images, args.min_agreement)
    except QuantizationRejectedError as exc:
        print(exc)
        return 1
    print(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
