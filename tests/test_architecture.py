"""docs/architecture.md stays true: each module imports only from the layers
below it, and the queue worker needs no unit of work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "orchestrator_db"

#: docs/architecture.md's table, bottom layer first.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("values", "types", "settings"),
    ("models",),
    ("sql",),
    ("_execution",),
    ("migrations",),
    ("work_queue", "task_graph"),
    ("repositories",),
    ("unit_of_work", "calls", "queue_worker", "retention", "retrying", "health"),
    ("database",),
    ("cli", "seed", "demo", "testing", "__init__"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> str:
    """The top-level part of ``orchestrator_db.<part>...``."""
    return module.split(".")[1] if "." in module else "__init__"


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        found.append((".".join(relative.parts), path))
    return found


def imported(module: str, path: Path) -> set[str]:
    """The orchestrator_db modules ``path`` imports (lazily too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: from the module's own package
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{node.module}"
            names.add(base)
            if base == "orchestrator_db":  # from orchestrator_db import values
                names.update(f"orchestrator_db.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("orchestrator_db.")}


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_each_module_imports_only_from_below(module: str, path: Path) -> None:
    own = layer_of(module)
    assert own in RANK, f"{module} is in no layer of docs/architecture.md"
    for name in imported(module, path):
        other = layer_of(name)
        assert other in RANK, f"{module} imports {name}, which is in no layer"
        assert RANK[other] <= RANK[own], f"{module} (layer {own}) imports {name} (layer {other})"


def test_the_queue_worker_needs_no_unit_of_work_and_no_database() -> None:
    module = "orchestrator_db.queue_worker"
    names = imported(module, PACKAGE / "queue_worker.py")
    assert not {"orchestrator_db.unit_of_work", "orchestrator_db.database"} & names


def test_repositories_catch_nothing_and_name_no_dialect() -> None:
    for path in (PACKAGE / "repositories").glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(node, ast.Try) for node in ast.walk(tree)), path.name
        strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)} & {
            "sqlite",
            "postgresql",
        }
        assert not strings, f"{path.name} names {strings}"
