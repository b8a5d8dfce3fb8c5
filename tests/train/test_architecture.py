"""The training layer's import arrows point one way: each part imports only the parts below it, at module level.

Layers, bottom to top: config; core (the algorithm core); speed (traces, learner process, collectives); acting;
runs (env names, checkpoint files, logs, evaluation); selfplay; record (offline datasets from
rollouts of runs and scripted players); loop (the trainer); mappo; sac; offline (BC, IQL); api; the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shoal.train

LAYERS = ["config", "core", "speed", "acting", "runs", "selfplay", "record", "loop", "mappo", "sac", "offline", "api",
          "__init__"]
ROOT = Path(shoal.train.__file__).parent


def _part(module: str) -> str:
    """``shoal.train.core.ppo`` -> ``core``."""
    rest = module.removeprefix("shoal.train").lstrip(".")
    return rest.split(".")[0] if rest else "__init__"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at_module_level)`` of every ``shoal.train`` import in ``path`` outside ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("shoal.train"):
                found.append((child.module, top))
            elif isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names if a.name.startswith("shoal.train"))
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
            visit(child, top and not nested)

    visit(tree, True)
    return found


def test_every_import_of_the_training_layer_points_down() -> None:
    upward, hidden = [], []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        part = relative.parts[0]
        assert part in LAYERS, f"{relative}: a new part of shoal.train needs a place in LAYERS"
        for module, top in _imports(path):
            target = _part(module)
            if not top and target != part:
                hidden.append(f"{relative} imports {module} inside a function")
            if LAYERS.index(target) > LAYERS.index(part):
                upward.append(f"{relative} ({part}) imports {module} ({target})")
    assert upward == [], "\n".join(upward)
    assert hidden == [], "\n".join(hidden)
