"""Typed configuration: ``load_config("conf/demo.yaml", ["train.epochs=2"])``."""

from __future__ import annotations

import os

from allmtl_spark.config.loader import ConfigError, apply_overrides, build, read_yaml, to_dict
from allmtl_spark.config.schema import AppConfig

__all__ = ["AppConfig", "ConfigError", "load_config", "to_dict"]


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> AppConfig:
    """Load the app config from a YAML file (or all defaults) with dotted overrides applied.

    Args:
        path: a ``conf/*.yaml`` file; None means the built-in defaults.
        overrides: ``section.key=value`` strings, applied after the file.

    Returns:
        The validated, frozen ``AppConfig``.

    Raises:
        ConfigError: naming the bad key and, where the set is closed, the allowed values.
    """
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return build(AppConfig, data)
