"""The notebooks are Databricks source files: header, cells split by the COMMAND line, code that compiles, no logic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.py"))
HEADER = "# Databricks notebook source"
SEPARATOR = "\n\n# COMMAND ----------\n\n"  # exactly what a Databricks export writes between cells
# Statements that would put logic in a notebook: it belongs in allmtl_spark (e.g. allmtl_spark/notebook.py).
LOGIC = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.For, ast.While, ast.If, ast.Try, ast.With)


def split_cells(text: str) -> list[str]:
    """The cells of a Databricks source notebook (the header line removed)."""
    header, _, body = text.partition("\n")
    assert header == HEADER
    return body.strip("\n").split(SEPARATOR)


def test_the_four_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_explore_data.py",
        "02_train_mtl.py",
        "03_score_archive.py",
        "04_reports.py",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_databricks_source_with_compiling_logic_free_cells(path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text.count("# COMMAND ----------") == text.count(SEPARATOR), "separator lines need a blank line each side"
    cells = split_cells(text)
    code = [c for c in cells if not c.startswith("# MAGIC")]
    assert cells[0].startswith("# MAGIC %md\n# MAGIC # "), "the first cell is the markdown title"
    assert len(code) >= 3
    for cell in cells:
        magic = [line.startswith("# MAGIC") for line in cell.splitlines()]
        if magic[0]:
            assert all(magic) and cell.startswith("# MAGIC %md"), f"a markdown cell holds only MAGIC lines:\n{cell}"
            continue
        assert not any(magic), f"MAGIC lines in a code cell:\n{cell}"
        tree = ast.parse(cell, filename=str(path))
        compile(tree, str(path), "exec")
        logic = [type(node).__name__ for node in ast.walk(tree) if isinstance(node, LOGIC)]
        assert not logic, f"{path.name}: {logic} in a cell; move the logic into allmtl_spark/notebook.py:\n{cell}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_only_allmtl_spark_and_creates_its_widgets_before_reading_them(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"allmtl_spark"}
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "w"
    ]
    created = {c.args[0].value for c in calls if c.func.attr in ("text", "dropdown")}
    read = {c.args[0].value for c in calls if c.func.attr == "get"}
    assert {"config", "overrides"} <= created and read <= created
