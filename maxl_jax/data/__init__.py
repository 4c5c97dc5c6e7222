"""Datasets as uint8 32x32 images, and the batches the steps consume.

`info` (what a run needs to know about its dataset) and `images` (the one
normalisation of every image) import no TensorFlow; `readers` (TFDS, IDX
files, image folders, scikit-learn's digits) and `pipeline` (shuffled,
augmented training batches; padded test batches) do. `spec.DataSpec` is
what they read.
"""
