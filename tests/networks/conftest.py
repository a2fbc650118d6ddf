"""Shared fixtures for the Keras builder tests: quiet TensorFlow, cache the expensive backbone builds."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported by the tests

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def classifiers():
    """Build each (backbone, head, num_outputs) classifier once at 75 px with weights=None.

    Builds cost seconds each, so tests share them: a test may train a shared model, so none may rely
    on its initial weights, and one that changes trainable flags restores them.
    """
    from allmtl_spark.networks.classifier import build_classifier

    cache = {}

    def get(backbone="InceptionV3", head="simple", num_outputs=1):
        key = (backbone, head, num_outputs)
        if key not in cache:
            cache[key] = build_classifier(backbone, input_size=75, num_outputs=num_outputs, head=head)
        return cache[key]

    return get
