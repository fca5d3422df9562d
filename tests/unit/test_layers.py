"""The layers of app/ (docs/architecture.md): a module imports only its own layer and the ones below."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

# Lowest first. Modules named here by their dotted path win over their package's layer.
LAYERS: list[set[str]] = [
    {
        "app.proto",
        "app.core",
        "app.ops.metrics",
        "app.ops.logs",
        "app.ops.embedded",
        "app.ops.runtime",
    },  # pure, or leaves
    {"app.config"},
    {"app.store"},
    {"app.pipeline", "app.celery_app", "app.seq_lua"},
    {"app.ws"},
    {"app.services"},
    {"app.api", "app.tasks"},
    {"app.gateway"},
    {"app.cli", "app.bench", "app.ops", "app.__main__"},
]


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_len:
                best, best_len = i, len(name)
    assert best >= 0, f"{module} is in no layer"
    return best


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
            # `from app.pkg import mod` names modules: count each as app.pkg.mod where that is a module
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (APP.parent / (candidate.replace(".", "/") + ".py")).exists() or (
                    APP.parent / candidate.replace(".", "/")
                ).is_dir()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("app"))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in sorted(APP.rglob("*.py")):
        me = module_name(path)
        if "proto" in path.parts or me == "app":
            continue
        for target in imports_of(path):
            if layer_of(target) > layer_of(me):
                upward.append(f"{me} -> {target}")
    assert upward == []


def test_the_layer_map_knows_every_package() -> None:
    for path in APP.rglob("*.py"):
        if module_name(path) != "app":
            layer_of(module_name(path))  # raises for a module no layer names
