"""Run ids name folders (checkpoints, reports, model artifacts): only a safe character set is allowed."""

from __future__ import annotations

import re

from allmtl_spark.config.loader import ConfigError

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_run_id(value: str, option: str = "--run-id") -> str:
    """Return ``value`` if it is a usable run id: 1-64 of ``A-Z a-z 0-9 . _ -``, not only dots.

    Raises:
        ConfigError: naming ``option``, the value and the allowed characters.
    """
    if not isinstance(value, str) or not RUN_ID_PATTERN.fullmatch(value) or set(value) == {"."}:
        raise ConfigError(
            f"{option} {value!r} is not a usable run id: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "(it becomes part of folder names), and not only dots"
        )
    return value
