"""The one classifier core: image loading, the DenseNet121 network, bundles and prediction.

Importing this package does not import TensorFlow/Keras; `load_classifier` does, when first called,
so that a Celery worker can import its app before it loads the framework.
"""

from model.images import ImageError, load_image, load_images
from model.predict import Prediction, load_classifier

__all__ = ["ImageError", "Prediction", "load_classifier", "load_image", "load_images"]
