"""The package's layout holds: each folder is one step of the flow and imports only from
the steps below it; Ray lives in tuning/ and the search command alone; no import circles.

The graph is read statically (every import statement, inside functions too), so a lazy
import cannot hide an arrow; one subprocess then checks what really loads at import."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nli_tune

PACKAGE = Path(nli_tune.__file__).parent
# Lowest first. A module imports from its own floor or lower ones; "entry" is the
# python -m commands at the package's top.
FLOORS = [
    "core",
    "redsm5",
    "units",
    "pairs",
    "model",
    "evaluation",
    "training",
    "study",
    "tracking",
    "tuning",
    "reporting",
    "measure",
    "entry",
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"  # nli_tune/__init__.py: paths only, below everything
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "entry"


def _imports(module: str) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names) for every import in `module`, lazy ones included;
    `from nli_tune.x import y` counts as importing nli_tune.x.y where y is a module."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            found += [(m, node.lineno, []) for m in submodules]
            found.append((node.module, node.lineno, names))
    return found


def _edges() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = {t for t, _, _ in _imports(module) if t in MODULES and t != module}
        graph[module] = {t for t in targets if t != "nli_tune"}
    return graph


def _ray_importers() -> set[str]:
    return {
        m for m in MODULES if any(t == "ray" or t.startswith("ray.") for t, _, _ in _imports(m))
    }


def test_ray_only_in_tuning_and_the_search_command():
    importers = _ray_importers()
    outside = {m for m in importers if _floor(m) != "tuning"}
    assert outside <= {"nli_tune.search"}, sorted(outside)
    assert any(_floor(m) == "tuning" for m in importers)  # the test reads imports at all


def test_only_the_search_command_imports_tuning():
    graph = _edges()
    users = {
        m
        for m, ts in graph.items()
        if _floor(m) != "tuning" and any(_floor(t) == "tuning" for t in ts)
    }
    assert users == {"nli_tune.search"}


def test_imports_go_down_the_floors():
    up = []
    for module, targets in _edges().items():
        here = _floor(module)
        for target in targets:
            there = _floor(target)
            if there == "root" or here == "root":
                continue
            if FLOORS.index(there) > FLOORS.index(here):
                up.append(f"{module} -> {target}")
            elif here == there == "entry" and module != "nli_tune.bench_gpu":
                up.append(f"{module} -> {target} (one command importing another)")
    assert not up, up


def test_no_import_circles():
    graph = _edges()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_no_private_names_across_folders():
    crossing = []
    for module in MODULES:
        for target, line, names in _imports(module):
            if target not in MODULES or _floor(target) == _floor(module):
                continue
            crossing += [f"{module}:{line} {target}.{n}" for n in names if n.startswith("_")]
    assert not crossing, crossing


def _loaded_after_import(modules: list[str]) -> list[str]:
    """Every module that importing `modules` loads, in a fresh interpreter."""
    code = f"import json, sys; import {', '.join(modules)}; print(json.dumps(list(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_nothing_outside_tuning_loads_ray_or_tuning_at_import():
    """What the static tests cannot see: a third-party import that pulls Ray in."""
    names = sorted(m for m in MODULES if _floor(m) != "tuning" and m != "nli_tune.search")
    loaded = _loaded_after_import(names)
    assert not [m for m in loaded if m.split(".")[0] == "ray" or m.startswith("nli_tune.tuning")]


def test_train_and_predict_check_their_input_before_torch_loads():
    """The commands import torch, transformers and peft (seconds) only after the config,
    data and model folder are checked, so bad input is answered at once."""
    loaded = _loaded_after_import(["nli_tune.train", "nli_tune.predict"])
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "peft")]
