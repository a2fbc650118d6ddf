"""Build typed config dataclasses from YAML files and dotted command-line overrides.

The loader is generic: it walks the dataclass type hints, so a section's fields, defaults and
validation live only in its dataclass (``schema.py``). Errors name the dotted key that is wrong
and, where the set is closed, the values allowed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b.c=value`` into the dotted key and the YAML-parsed value.

    Args:
        text: one ``--set`` argument, for example ``train.stages.stage2.epochs=3``.

    Returns:
        ``(dotted_key, value)`` with the value parsed as YAML (numbers, booleans, lists, null).
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    if not raw.strip():
        return key.strip(), ""
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {_yaml_problem(err)}") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with each dotted override set, creating sections as needed."""
    merged = _deep_copy(data)
    for text in overrides:
        dotted, value = parse_override(text)
        node = merged
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return merged


def read_yaml(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, following an optional top-level ``extends: other.yaml`` chain.

    ``extends`` is resolved against the folder of the file that names it.

    Raises:
        ConfigError: a missing file, YAML that does not parse (file, line and column named), a top
            level that is not a mapping, or an ``extends`` chain that comes back to a file in it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist{_missing_config_hint(path)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    parent = data.pop("extends", None)
    if parent:
        where = f"{path}, line {_key_line(text, 'extends')}"
        if not isinstance(parent, str):
            raise ConfigError(f"{where}: extends must name one YAML file, got {parent!r}")
        target = path.parent / parent
        chain = (*_chain, path.resolve())
        if target.resolve() in chain:
            loop = " -> ".join(str(p) for p in (*chain, target.resolve()))
            raise ConfigError(f"{where}: extends {parent!r} makes a loop: {loop}")
        if not target.is_file():
            raise ConfigError(
                f"{where}: extends {parent!r}, but {target} does not exist: extends is resolved against the "
                f"folder of the file that names it ({path.parent}){_extends_hint(parent, path)}"
            )
        data = deep_merge(read_yaml(target, chain), data)
    return data


def _missing_config_hint(path: Path) -> str:
    """A hint for a --config path that does not exist: the demo config only if it exists here and is another file."""
    demo = Path("conf/demo.yaml")
    if demo.is_file() and demo.resolve() != path.resolve():
        return f" (the demo config is {demo})"
    return f" (relative paths are taken from the current folder, {Path.cwd()})"


def _extends_hint(parent: str, path: Path) -> str:
    """How to write ``extends`` in ``path`` so that it names the file ``parent`` names from the current folder."""
    meant = Path(parent)
    if meant.is_absolute() or not meant.is_file():
        return ""
    relative = os.path.relpath(meant.resolve(), path.parent.resolve())
    return f"; to extend {parent} of the current folder, write extends: {relative}"


def _yaml_problem(err: yaml.YAMLError) -> str:
    """``line L, column C: problem`` of a PyYAML error (its mark is 0-based)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _key_line(text: str, key: str) -> int | str:
    """1-based line of the top-level ``key`` in a YAML document (``?`` if it cannot be found)."""
    node = yaml.compose(text)
    for key_node, _ in getattr(node, "value", []):
        if getattr(key_node, "value", None) == key:
            return key_node.start_mark.line + 1
    return "?"


def deep_merge(base: dict, update: dict) -> dict:
    """Merge ``update`` into a copy of ``base``; nested mappings merge, everything else replaces."""
    out = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def build(cls: type[T], data: Any, key: str = "") -> T:
    """Build dataclass ``cls`` from plain ``data``, checking keys and types on the way down.

    Args:
        cls: a dataclass type whose fields carry type hints.
        data: a mapping (from YAML) or None for all defaults.
        key: dotted path of this section, used in error messages.

    Returns:
        An instance of ``cls``; its ``__post_init__`` validation has run.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'} must be a section (mapping), got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    # A section may map keys it no longer has to what replaced them (RENAMED_KEYS: old -> new, with a hint).
    renamed = [u for u in unknown if u in getattr(cls, "RENAMED_KEYS", {})]
    if renamed:
        old = renamed[0]
        raise ConfigError(f"{_join(key, old)} was removed: use {_join(key, cls.RENAMED_KEYS[old])}")
    if unknown:
        where = key or "the top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(_join(key, u) for u in unknown)} in {where}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _join(key, name))
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(_prefix(key, str(err))) from None
    except TypeError as err:  # a required field without a default is missing
        raise ConfigError(f"{key or 'config'}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Turn a config dataclass tree back into plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {options}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} is {value!r}; allowed values: {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        k_t, v_t = args if args else (Any, Any)
        return {_coerce(k_t, k, key): _coerce(v_t, v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _prefix(key: str, message: str) -> str:
    """Qualify a field name raised by ``__post_init__`` with its section path."""
    if not key or message.startswith(key):
        return message
    return f"{key}.{message}"


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
