"""A fitted frozen-backbone head as a bundle (train.frozen, train.teach): the network with the head folded into its
`logits` layer, the val report where there is one, the calibration (train.calibrate.write_honesty: temperature,
unknown statistics, reliability diagram, model_version) and features.npz, so that the bundle can be taught."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def head_model(n_classes: int, input_size: int, *, weights_file: str | None = None, parent=None):
    """DenseNet121 with a `logits` layer of `n_classes`: the backbone from a weights file, or the layers of a
    parent classifier (the same backbone, no weights file to extract: what teaching needs in seconds)."""
    if parent is None:
        from model.network import build_model

        return build_model(n_classes, input_size, weights=weights_file)
    import keras

    names = {layer.name for layer in parent.layers}
    x = parent.get_layer("head_dropout" if "head_dropout" in names else "avg_pool").output
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    probs = keras.layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(parent.inputs, probs, name=parent.name)


def write_head_bundle(out: Path, model, config, fitted, base, card: dict, val: tuple | None = None,
                      report_dir: Path | None = None) -> str:
    """Write the bundle; `fitted` is train.head.Fitted, `base` train.features.BaseFeatures, `val` the val photos'
    (features, labels, paths) for metrics.json, report.txt and the confusion matrix, written to `report_dir`
    (default: the bundle folder). Returns the model_version."""
    from model.bundle import save_bundle
    from model.calibration import softmax
    from train.calibrate import write_honesty
    from train.evaluate import card_metrics, write_evaluation
    from train.features import write_features

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.get_layer("logits").set_weights([fitted.head.kernel.astype(np.float32),
                                           fitted.head.bias.astype(np.float32)])
    card = dict(card)
    if val is not None and len(val[1]):
        x, y, paths = val
        probs = softmax(fitted.head(x), config.temperature)  # the network's logits are this head on these features
        report_dir = Path(report_dir or out)
        report_dir.mkdir(parents=True, exist_ok=True)
        card["metrics"] = card_metrics(write_evaluation(report_dir, y, probs, config.labels, [str(p) for p in paths]))
    save_bundle(model, out, config, card)
    version = write_honesty(out, fitted.honesty, fitted.oof.logits["none"], fitted.oof.y)
    write_features(out, base)
    print(f"bundle: {out}  model_version={version}")
    return version
