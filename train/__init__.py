"""Training and evaluation of DenseNet121 classifiers on folder-per-class datasets."""
