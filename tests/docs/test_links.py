"""Every pointer in the repository points at something in the repository.

Markdown links, backticked repository paths and paths or ``*.md`` names mentioned in code and
comments ("see docs/x.md") must exist in the checkout; nothing may point at files outside it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TOP_DIRS = ("allmtl_spark", "conf", "deploy", "docs", "jobs", "notebooks", "tests", ".ci")
TEXT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".cron", ".json", ""}
# A path starting at one of the repository's top folders, not inside a longer path or a URL.
REPO_PATH = re.compile(r"(?<![\w./~:-])((?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[\w./-]*[\w/])")
MD_NAME = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Placeholders and patterns, not paths: jobs/<job>.py, conf/*.yaml, deploy/{a,b}, $VAR, ... .
NOT_A_PATH = re.compile(r"[<>*{}$]|\.\.\.")
OUTSIDE = re.compile(r"\.\./shared|\b(?:STACK|METHOD|STYLE)\.md\b")
# Written at run time, never tracked (named in docs as where to look).
GENERATED = ("tests/.pytest_cache", "notebooks/.ipynb_checkpoints")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def repo():
    files = tracked_files()
    paths = set(files)
    for f in files:  # every folder holding a tracked file
        parts = f.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    texts = {}
    for f in files:
        p = REPO / f
        if (p.suffix in TEXT_SUFFIXES or p.name in ("Makefile", "Dockerfile")) and p.is_file():
            try:
                texts[f] = p.read_text()
            except UnicodeDecodeError:
                continue
    return paths, texts


def _exists(path: str, paths: set[str]) -> bool:
    path = path.rstrip("/").rstrip(".")
    return path in paths or path.startswith(GENERATED)


def test_markdown_links_point_at_files_that_exist(repo):
    paths, texts = repo
    broken = []
    for name, text in texts.items():
        if not name.endswith(".md"):
            continue
        for target in MD_LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            normal = os.path.normpath(os.path.join(os.path.dirname(name), target.split("#")[0]))
            if not _exists(normal, paths):
                broken.append(f"{name}: ({target})")
    assert not broken, "Markdown links to files not in the repository:\n" + "\n".join(broken)


def test_repository_paths_named_anywhere_exist(repo):
    paths, texts = repo
    missing = []
    for name, text in texts.items():
        if name.startswith("tests/docs/"):
            continue  # this file's own examples
        for lineno, line in enumerate(text.splitlines(), 1):
            if name.startswith("tests/") and name.endswith(".py"):
                # Tests name missing paths on purpose; their comments must still point at real files.
                line = line.split("#", 1)[1] if "#" in line else ""
            for path in REPO_PATH.findall(line):
                if NOT_A_PATH.search(line[line.find(path) : line.find(path) + len(path) + 1]):
                    continue
                if not _exists(path, paths):
                    missing.append(f"{name}:{lineno}: {path}")
    assert not missing, "paths that are not in the repository:\n" + "\n".join(missing)


def test_markdown_files_named_anywhere_exist(repo):
    paths, texts = repo
    names = {Path(p).name for p in paths}
    missing = [
        f"{name}:{lineno}: {md}"
        for name, text in texts.items()
        if not name.startswith("tests/docs/")
        for lineno, line in enumerate(text.splitlines(), 1)
        for md in MD_NAME.findall(line)
        if md not in names
    ]
    assert not missing, "Markdown files named but not in the repository:\n" + "\n".join(missing)


def test_nothing_points_outside_the_repository(repo):
    _, texts = repo
    outside = [
        f"{name}:{lineno}"
        for name, text in texts.items()
        if not name.startswith("tests/docs/")
        for lineno, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not outside, "references to files outside the repository:\n" + "\n".join(outside)


def test_the_checks_find_what_they_look_for():
    """The patterns themselves: a broken pointer of each kind is found, a placeholder is not."""
    assert REPO_PATH.findall("see docs/missing.md, and conf/demo.yaml.") == ["docs/missing.md", "conf/demo.yaml"]
    assert REPO_PATH.findall("/tmp/x/conf/demo.yaml https://a.b/docs/x") == []
    assert NOT_A_PATH.search("jobs/<job>.py") and not NOT_A_PATH.search("jobs/train_mtl.py")
    assert MD_NAME.findall("(see NOTES.md) or docs/x.md") == ["NOTES.md"]
    assert MD_LINK.findall("![a](docs/img/x.png) [b](method.md#x) [c](https://x)") == [
        "docs/img/x.png",
        "method.md#x",
        "https://x",
    ]
