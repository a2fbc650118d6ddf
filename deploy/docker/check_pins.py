"""Fail unless every ``name==version`` pin of a constraints file is installed at exactly that version.

The container images run it at build time (``python check_pins.py deploy/constraints.txt``): pip's
``-c`` only constrains what something asks for, so a pin nothing requires would pass silently
without this check. Pins of packages that are meant to be absent from an image (``tensorflow-cpu``
in the GPU image, which installs ``tensorflow``) are named with ``--absent-ok``.

Exit codes: 0 all pins installed, 1 a pin is missing or at another version, 2 unreadable input.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def read_pins(path: Path) -> dict[str, str]:
    """``{normalized name: version}`` for each ``name==version`` line; comments and blanks skipped."""
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: not a name==version pin: {raw.strip()!r}")
        pins[normalize(match.group(1))] = match.group(2)
    return pins


def normalize(name: str) -> str:
    """PEP 503 name normalization: ``Opencv_Python.Headless`` -> ``opencv-python-headless``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def mismatches(pins: dict[str, str], absent_ok: set[str]) -> list[str]:
    """One message per pin that is not installed at its version."""
    problems = []
    for name, wanted in sorted(pins.items()):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name not in absent_ok:
                problems.append(f"{name}: pinned {wanted}, not installed")
            continue
        if found != wanted:
            problems.append(f"{name}: pinned {wanted}, installed {found}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("constraints", type=Path, help="a pip constraints file of name==version lines")
    parser.add_argument(
        "--absent-ok",
        action="append",
        default=[],
        metavar="NAME",
        help="a pinned package this environment deliberately does not install (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        pins = read_pins(args.constraints)
    except (OSError, ValueError) as err:
        print(f"check_pins: {err}", file=sys.stderr)
        return 2
    problems = mismatches(pins, {normalize(n) for n in args.absent_ok})
    for problem in problems:
        print(f"check_pins: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_pins: {len(pins)} pins of {args.constraints} installed exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
