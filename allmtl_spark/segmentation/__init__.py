"""White-cell segmentation: the pure slide pipeline, U-Net training and the Spark job.

- ``pipeline``: numpy / OpenCV only: ROI, mask post-processing, isolation, crops, detection scores.
- ``predict``: ``make_predict_fn``, the U-Net loaded once per Python process (TensorFlow).
- ``train``: ``allmtl train-segmenter`` (driver-side Keras training, registry).
- ``job``: ``allmtl segment`` (``mapInPandas`` over ``slides`` into the Delta tables).
- ``figures``: the README picture (slide, mask, isolated cells).

Importing this package imports none of them.
"""
