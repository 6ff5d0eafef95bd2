"""Every ``from ift_engine... import name`` in the scripts beside the library resolves: the
benchmarks and examples are not run by the suite, so a moved name would break them silently."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/**/*.py")])


def engine_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of each ``from ift_engine... import name`` in the file, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ift_engine":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_names_a_script_imports_exist(path: Path) -> None:
    for module, name in engine_imports(path):
        imported = importlib.import_module(module)
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), (
            f"{path.relative_to(ROOT)}: {module} has no {name}"
        )
