"""Teachers for distillation: ImageNet-pretrained models whose pooled features DenseNet121 learns to reproduce.

A teacher takes uint8 RGB batches at its own input size (224 px for the shipped MobileNets) and returns one
float32 feature vector per image: the globally pooled activations before its classifier. Three file kinds:
`.tflite` (quantized; run by TensorFlow Lite, values dequantized), `.onnx` (ONNX Runtime, batched) and
`.keras` (a model whose output is the feature). Every teacher is named in the distilled model's card by its
file name and sha256, so a student can always be traced back to what taught it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.bundle import file_sha256


@dataclass
class Teacher:
    path: Path
    input_size: int
    dim: int
    sha256: str
    _run: object = field(repr=False, default=None)

    @property
    def name(self) -> str:
        return self.path.name

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 at `input_size` -> (N, dim) float32 pooled features."""
        if images.dtype != np.uint8 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"{self.name} takes uint8 images of {self.input_size}x{self.input_size}x3, "
                             f"got {images.dtype} {images.shape[1:]}")
        return self._run(images).reshape(len(images), self.dim).astype(np.float32)

    def card(self) -> dict:
        return {"file": self.name, "sha256": self.sha256, "input_size": self.input_size, "feature_dim": self.dim}


def load_teacher(path: str | Path, threads: int = 0) -> Teacher:
    """A teacher from a .tflite, .onnx or .keras file; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher file not found: {path}")
    loaders = {".tflite": _tflite, ".onnx": _onnx, ".keras": _keras}
    if path.suffix.lower() not in loaders:
        raise ValueError(f"unsupported teacher {path.name}: expected one of {', '.join(loaders)}")
    size, dim, run = loaders[path.suffix.lower()](path, threads)
    return Teacher(path, size, dim, file_sha256(path), run)


def _pooled_tensor(details: list[dict], output_index: int) -> dict:
    """The globally pooled feature: the widest (1, 1, 1, C) tensor, else the model output.

    In the shipped MobileNets this is the AvgPool before the 1x1 classifier conv (1024 or 1280 wide),
    wider than the 1001-way logits that follow it.
    """
    pooled = [d for d in details if len(d["shape"]) == 4 and tuple(d["shape"][:3]) == (1, 1, 1)]
    if pooled:
        return max(pooled, key=lambda d: (int(d["shape"][-1]), d["index"]))
    return next(d for d in details if d["index"] == output_index)


def _tflite(path: Path, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - the class, under its usual name

    # Intermediate tensors (the pooled feature) are only readable when the interpreter keeps them all.
    interp = Interpreter(model_path=str(path), num_threads=threads or None, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    if inp["dtype"] not in (np.uint8, np.float32):
        raise ValueError(f"{path.name}: expected a uint8 or float32 input, got {inp['dtype']}")
    feat = _pooled_tensor(interp.get_tensor_details(), interp.get_output_details()[0]["index"])
    scale, zero = feat["quantization"]
    size, dim = int(inp["shape"][1]), int(np.prod(feat["shape"][1:]))

    def run(images: np.ndarray) -> np.ndarray:
        # One image at a time: the quantized graphs end in fixed-batch reshapes, so the input cannot be resized.
        out = np.empty((len(images), dim), np.float32)
        for i, image in enumerate(images):
            # Raw 0..255 pixels either way: a quantized model's first op scales them, a float one's graph does.
            interp.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
            interp.invoke()
            q = interp.get_tensor(feat["index"]).reshape(dim).astype(np.float32)
            out[i] = (q - zero) * scale if scale else q
        return out

    return size, dim, run


def _onnx(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=ort.get_available_providers())
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    size, dim = int(inp.shape[1]), int(np.prod([d for d in out.shape[1:] if isinstance(d, int)]))
    as_float = "float" in inp.type

    def run(images: np.ndarray) -> np.ndarray:
        return session.run([out.name], {inp.name: images.astype(np.float32) if as_float else images})[0]

    return size, dim, run


def _keras(path: Path, threads: int):
    import keras

    model = keras.saving.load_model(path, compile=False)
    size, dim = int(model.inputs[0].shape[1]), int(np.prod(model.outputs[0].shape[1:]))

    def run(images: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))

    return size, dim, run
