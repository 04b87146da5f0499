"""Imports flow one way: engine -> (nothing of ours), annotations -> (nothing of ours), demo -> both."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "engine": {"gradio", "sqlite_utils", "annotations", "demo"},
    "annotations": {"gradio", "engine", "demo"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {f: b for f, b in bad.items() if b} == {}


def test_app_py_only_composes():
    app = ROOT / "app.py"
    if not app.exists():
        pytest.skip("app.py not written yet")
    assert imported_roots(app) & {"gradio", "sqlite_utils"} == set(), "app.py should compose demo/, not build UI itself"
