"""The package's layers (docs/architecture.md): every import goes down a layer, none makes a cycle.

Every module's imports are read from its source with ``ast`` -- the top-level ones and those
inside functions alike -- so a lazy import cannot hide an upward arrow.  A failure names the
module, the line and the import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "logloss"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# Layer of each module or package (the longest matching prefix wins); docs/architecture.md draws
# the same stack.  "logloss" itself is the public facade: it may name anything, lazily.
LAYERS = {
    "logloss._tensors": 0,
    "logloss._checks": 0,
    "logloss._json": 0,
    "logloss._atomic": 0,
    "logloss._version": 0,
    "logloss.likelihood": 1,
    "logloss.activations": 1,
    "logloss.losses": 1,
    "logloss.data": 2,
    "logloss.fused": 3,
    "logloss.nn": 3,
    "logloss.distributed": 3,
    "logloss.training": 4,
    "logloss.insight": 5,
    "logloss.serve": 6,
    "logloss.cli": 7,
    "logloss.__main__": 7,
    "logloss": 8,
}
# Names kept for earlier releases' imports: they only re-export (see docs/architecture.md).
ALIASES = {
    "logloss.checkpoint",
    "logloss.model",
    "logloss.diagnostics",
    "logloss.explain",
    "logloss.plots",
    "logloss.report",
    "logloss.preprocess",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return LAYERS[prefix]
    return None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported logloss module) for every import in the file, nested ones included."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from logloss.training import run_folder" imports the submodule run_folder;
            # "from logloss.training import train" imports a name of the package
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                path = PACKAGE.parent / candidate.replace(".", "/")
                is_module = path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
                found.append((node.lineno, candidate if is_module else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "logloss"]


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in source_files():
        name = module_name(path)
        edges[name] = {target for _, target in imports_of(path) if target != name}
    return edges


def test_every_module_has_a_layer():
    unplaced = [
        module_name(p)
        for p in source_files()
        if layer_of(module_name(p)) is None and module_name(p) not in ALIASES
    ]
    assert unplaced == [], (
        f"modules without a layer in LAYERS (and docs/architecture.md): {unplaced}"
    )


def test_imports_go_down_the_layers():
    problems = []
    for path in source_files():
        name = module_name(path)
        if name in ALIASES:
            continue
        own = layer_of(name)
        for line, target in imports_of(path):
            if target == "logloss" and name != "logloss":
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports the facade")
                continue
            theirs = layer_of(target)
            if target in ALIASES or (theirs is not None and own is not None and theirs > own):
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} (layer {own}) imports "
                    f"{target} (layer {theirs}): an import up the layers"
                )
    assert problems == [], "\n".join(problems)


def test_aliases_only_re_export():
    for name in ALIASES:
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "ImportFrom", "Assign"}, f"{name} does more than re-export"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in edges:
                continue
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if state.get(target) is None and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    # Packages' __init__ modules re-export their own submodules: an edge from a submodule back
    # to its package is Python's parent import, not a cycle of the code.
    edges = {
        name: {t for t in targets if not name.startswith(t + ".")}
        for name, targets in graph().items()
    }
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def explained(lines: list[str], number: int) -> bool:
    """A comment on the import's line, or above the block of imports it belongs to."""
    if "#" in lines[number - 1]:
        return True
    above = number - 2
    while above >= 0 and re.match(r"\s*(from \S+ )?import |\s*[\w, ]+,?$|\s*\)$", lines[above]):
        if "#" in lines[above]:
            return True
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_lazy_imports_say_why():
    """An import inside a function is there for start-up time or an optional dependency, and
    says so in a comment on its line or the line above it."""
    silent = []
    for path in source_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)) and not explained(
                    lines, inner.lineno
                ):
                    silent.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
    assert silent == [], "lazy imports without a reason:\n" + "\n".join(sorted(set(silent)))


def test_architecture_doc_names_every_module():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w/]+(?:\.py|\.c)?)`", text))
    missing = []
    for path in source_files():
        if path.name == "__init__.py" or module_name(path) in ALIASES:
            continue
        if path.name not in named and path.stem not in named:
            missing.append(str(path.relative_to(PACKAGE)))
    assert missing == [], f"docs/architecture.md does not describe: {missing}"


@pytest.mark.parametrize("importer", ["import logloss", "import logloss.cli"])
def test_the_light_layers_do_not_load_torch(importer):
    import subprocess
    import sys

    code = f"{importer}; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
