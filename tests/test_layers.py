"""Layers import downward only (``shared/DESIGN.md``; issue 16), lazy imports inside functions included.

From the bottom: the small shared modules, nn (with the posterior sampler and the scriptable
sampling module), data, artifacts, noise_models, methods, training and inference, export, zoo,
analysis, the API (with the demo, a workflow that combines layers) and the CLI. A module may
import its own layer and the layers below it; imports inside one top-level package (the
methods registry, the noise-model kinds) are registrations and not checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bmz_cosdd

LAYERS = [
    {"__init__", "errors", "threads", "config"},
    {"nn"},
    {"data", "plotting"},
    {"artifacts"},
    {"noise_models"},
    {"methods"},
    {"training", "inference"},
    {"export"},
    {"zoo"},
    {"analysis"},
    {"api", "demo"},
    {"cli", "__main__"},
]
RANK = {name: level for level, names in enumerate(LAYERS) for name in names}
ROOT = Path(bmz_cosdd.__file__).parent


def _imported(path: Path) -> list[tuple[str, int]]:
    """The bmz_cosdd top-level names ``path`` imports (at any depth of the file), with their line."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[:-1])[: len(parts) - node.level]
                module = base + (node.module.split(".") if node.module else [])
            elif (node.module or "").split(".")[0] == "bmz_cosdd":
                module = node.module.split(".")[1:] or [alias.name for alias in node.names]
            else:
                continue
            found += [(module[0], node.lineno)] if module else []
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], node.lineno) for a in node.names if a.name.startswith("bmz_cosdd.")]
    return found


def test_every_module_has_a_layer():
    tops = {p.relative_to(ROOT).with_suffix("").parts[0] for p in ROOT.rglob("*.py")}
    assert tops <= set(RANK), f"place {sorted(tops - set(RANK))} in LAYERS"


def test_no_import_runs_back_up():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        source = path.relative_to(ROOT).with_suffix("").parts[0]
        for target, line in _imported(path):
            if target != source and RANK.get(target, 0) > RANK[source]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not upward, "\n".join(upward)
