"""Reference documentation generated from the code: tables and config (``allmtl tables``, ``allmtl config-docs``)."""

from __future__ import annotations

import dataclasses
import typing

from allmtl_spark import tables


def tables_markdown() -> str:
    """Markdown reference of every Delta table, from the declarations in ``tables.py``."""
    parts = []
    for table in tables.ALL_TABLES:
        parts.append(f"### `{table.name}`\n\n{table.description}\n")
        keys = ", ".join(f"`{k}`" for k in table.merge_keys)
        parts.append(f"Merge key: {keys}." + (f" Partitioned by {', '.join(table.partition_by)}." if
                                                table.partition_by else "") + "\n")
        parts.append("| column | type | notes |\n|---|---|---|")
        for f in table.schema.fields:
            parts.append(f"| `{f.name}` | {f.dataType.simpleString()} | {table.column_docs.get(f.name, '')} |")
        parts.append("")
    return "\n".join(parts)


def config_markdown(root_cls=None) -> str:
    """Markdown reference of every config key with its type and default, from the dataclasses."""
    from allmtl_spark.config.schema import AppConfig

    root_cls = root_cls or AppConfig
    lines = ["| key | type | default |", "|---|---|---|"]
    _walk(root_cls, "", lines)
    return "\n".join(lines)


def _walk(cls, prefix: str, lines: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            _walk(hint, key + ".", lines)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        type_name = str(hint).replace("typing.", "")
        lines.append(f"| `{key}` | {type_name} | `{_short(default)}` |")


def _short(value) -> str:
    text = repr(value) if not dataclasses.is_dataclass(value) else type(value).__name__
    return text if len(text) < 60 else text[:57] + "..."
