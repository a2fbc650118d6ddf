"""Keras model builders (tf.keras, Keras 2): residual U-Net, transfer-learning classifier, losses, freezing.

One builder per module, every hyperparameter an explicit keyword, uncompiled models out. Importing
this package does not import TensorFlow; its modules do.
"""
