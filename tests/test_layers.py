"""The floors (pyproject.toml, ``[tool.importlinter]``): the contracts hold, and no import inside a function crosses
floors except the deferred imports the contracts name."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in CONFIG["contracts"]}
DEFERRED = ("optional-extras", "torch-on-demand")
"""The contracts whose ignored imports are the only ones a function may make across floors."""


def floors() -> list[str]:
    """Every module a floor is made of, top floor first (``a : b`` and ``a | b`` are siblings on one floor)."""
    return [m.strip() for layer in CONTRACTS["floors"]["layers"] for m in layer.replace("|", ":").split(":")]


def floor_of(module: str, names: list[str]) -> str | None:
    """The floor module ``module`` belongs to (the longest match), or ``None`` outside every floor."""
    hits = [n for n in names if module == n or module.startswith(n + ".")]
    return max(hits, key=len) if hits else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def function_imports(path: Path) -> list[tuple[str, int, str]]:
    """``(importer, line, imported)`` for every import statement inside a function of the file at ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    importer = module_name(path) if path.is_relative_to(ROOT) else path.stem
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if in_function and isinstance(child, ast.Import):
                found.extend((importer, child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((importer, child.lineno, child.module))
            visit(child, inside)

    visit(tree, False)
    return found


def crossing_function_imports() -> list[str]:
    """Imports inside functions that cross floors, or load a forbidden extra, and are not named in a contract."""
    names = floors()
    allowed = {tuple(i.replace(" ", "").split("->")) for c in DEFERRED for i in CONTRACTS[c]["ignore_imports"]}
    extras = set(CONTRACTS["optional-extras"]["forbidden_modules"])
    bad = []
    for package in CONFIG["root_packages"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            for importer, line, imported in function_imports(path):
                source, target = floor_of(importer, names), floor_of(imported, names)
                crosses = target is not None and target != source
                if (crosses or imported.split(".")[0] in extras) and (importer, imported) not in allowed:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {importer} imports {imported} inside a function")
    return bad


def test_the_contracts_hold() -> None:
    # This checkout's packages, not an installed copy's.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_import_inside_a_function_crosses_floors() -> None:
    assert crossing_function_imports() == []


def test_every_s2r_module_is_on_a_floor() -> None:
    names = floors()
    outside = [module_name(p) for p in sorted((ROOT / "s2r").rglob("*.py"))
               if module_name(p) != "s2r" and floor_of(module_name(p), names) is None]
    assert outside == []


def test_the_check_sees_a_crossing_import(tmp_path: Path) -> None:
    # The walk itself: an import of a higher floor inside a function is found.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import robot.config\n    from s2r.core import errors\n")
    found = function_imports(bad)
    assert [(line, imported) for _, line, imported in found] == [(2, "robot.config"), (3, "s2r.core")]
    assert floor_of("robot.config", floors()) == "robot" and floor_of("s2r.core.errors", floors()) == "s2r.core"
