"""The package layout holds: no import cycles among memo's modules (imports inside functions included).

The layers themselves (store < operations < service < CLI and demo; the libraries never import the
registry) are import-linter contracts in pyproject.toml, checked by `lint-imports` in .ci/run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGES = ("registry", "merging", "training", "executive", "osutil")
ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 65  # signature and docstring included


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES)
    assert len(graph.modules) > 50, "the graph should hold every module"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(module):
            return {"a": {"b"}, "b": {"a"}, "c": set()}[module]

    assert _cycles(Graph) == [["a", "b"]]


def test_modules_and_functions_stay_small():
    long_modules = [
        f"{p.relative_to(ROOT)}: {n}" for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    long_functions = [
        f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}"
        for p in _sources()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long_modules == [] and long_functions == []


def test_the_migrations_never_import_memo():
    """Alembic's scripts describe the schema as it was; importing today's code would make them drift."""
    scripts = [ROOT / "alembic" / "env.py", *sorted((ROOT / "alembic" / "versions").glob("*.py"))]
    assert len(scripts) > 1
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in PACKAGES for n in names), f"{script.name} imports {names}"


HEAVY = ("torch", "transformers", "huggingface_hub", "openai", "numpy", "matplotlib")


@pytest.mark.parametrize("args", [["--help"], ["merge", "list"], ["corpus", "list", "--json"], ["log"]])
def test_listings_and_help_load_no_torch(tmp_path, args):
    """Listings, help and the page pay only for what they use: torch, transformers, the Hub and OpenAI
    clients load when a command first needs them (osutil.lazy_import)."""
    home = tmp_path / "home"
    code = (
        "import sys\n"
        "from registry.cli import cli\n"
        f"cli.main({['--home', str(home), *args]!r}, standalone_mode=False)\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    for step in (["init"], args):
        script = code.replace(repr(["--home", str(home), *args]), repr(["--home", str(home), *step]))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


def test_help_opens_no_database():
    """`memo --help` imports neither SQLAlchemy nor Alembic: the commands load the registry when they run."""
    code = (
        "import sys\nfrom registry.cli import cli\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
