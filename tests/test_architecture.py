"""The house as drawn: no package reaches into another's private names (import-linter, run by scripts/test,
checks the layering itself), and no module or function grows past the size the style sets."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("train", "export", "connectors", "plugin")


def sources():
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            yield room, path, ast.parse(path.read_text())


def test_no_package_imports_another_packages_private_names():
    found = []
    for room, path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmql."):
                other = node.module.split(".")[1]
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if other != room and private:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {private}")
    assert not found, found


def test_modules_and_functions_stay_small():
    """About 400 lines a module and 60 a function (STYLE.md); a few are allowed a little over, none far over."""
    long_modules, long_functions = [], []
    for _, path, tree in sources():
        lines = len(path.read_text().splitlines())
        if lines > 450:
            long_modules.append(f"{path.relative_to(ROOT)} {lines}")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno > 75:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)
