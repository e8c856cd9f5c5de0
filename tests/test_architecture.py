"""The import graph of ``src/kefu`` keeps the layering that docs/architecture.md describes.

Layers, lowest first: the shared layer (``types``, ``paths``, ``heap``, ``clock``, ``progress``, ``text``,
``artifacts``, ``state``), the configuration schemas (``kefu.config`` and each ``<stage>/config.py``), the stages in
:data:`STAGE_ORDER`, and the entry points (``kefu.cli``, ``kefu.demo``, ``kefu.testing`` and each
``<stage>/cli.py``). A module imports only from its own layer or below; stages import only earlier stages, so no
two stage folders can form a cycle. A kefu import inside a
function is allowed only where it defers a heavy dependency (torch, transformers, ...) on purpose.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "kefu"
SHARED = ("types", "paths", "heap", "clock", "files", "progress", "text", "artifacts", "state")
STAGE_ORDER = ("safety", "data", "kg", "train", "eval", "loop", "serve")
ENTRY_POINTS = ("cli", "demo", "testing", "__init__", "__main__")
# third-party packages slow or large enough at import time that a command which does not need them should not load
# them: a kefu module importing one of these (directly or through kefu modules) may be imported inside a function
HEAVY = {"torch", "transformers", "peft", "accelerate", "opacus", "sklearn", "scipy", "fastapi", "starlette", "uvicorn",
         "nltk", "sacrebleu", "rouge_chinese", "datasketch", "gguf", "safetensors", "openai", "deepspeed", "ray"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, module: str, node: ast.ImportFrom | None = None) -> list[str]:
    """The kefu modules an import statement loads (``from kefu.x import y`` loads ``kefu.x.y`` when it is a module)."""
    modules = _modules()
    if node is not None and node.level:
        package = module if _modules()[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        name = f"{base}.{node.module}" if node.module else base
    if not name.startswith("kefu"):
        return []
    if node is None:
        return [name] if name in modules else []
    # ``from X import a, b``: the submodules named, and X itself only for names that are its attributes
    subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in modules]
    attrs = len(subs) < len(node.names)
    return ([name] if name in modules and attrs else []) + subs


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


@lru_cache(maxsize=1)
def _imports() -> dict[str, list[tuple[str, int, bool]]]:
    """module -> [(imported kefu module or third-party root, line, inside a function)]; TYPE_CHECKING blocks skipped."""
    out: dict[str, list[tuple[str, int, bool]]] = {}
    for module, path in _modules().items():
        found: list[tuple[str, int, bool]] = []

        def visit(node: ast.AST, nested: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    continue
                inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        targets = _resolve(alias.name, module) or [alias.name.split(".")[0]]
                        found.extend((t, child.lineno, nested) for t in targets)
                elif isinstance(child, ast.ImportFrom):
                    targets = _resolve(child.module or "", module, child)
                    if not targets and not child.level:
                        targets = [(child.module or "").split(".")[0]]
                    found.extend((t, child.lineno, nested) for t in targets)
                visit(child, inner)

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
        out[module] = found
    return out


def layer(module: str) -> tuple[int, str]:
    """(rank, name) of a module's layer: shared 0, config 1, stages 2.., entry points last."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    tail = parts[2] if len(parts) > 2 else None
    if head in SHARED:
        return 0, "shared"
    if head == "config" or tail == "config":
        return 1, "config"
    if head in ENTRY_POINTS or tail == "cli":
        return 100, "entry"
    assert head in STAGE_ORDER, f"{module}: folder {head!r} is in no layer: add it to docs/architecture.md and here"
    return 2 + STAGE_ORDER.index(head), head


def test_every_module_imports_only_its_own_layer_or_below():
    bad = []
    for module, imports in _imports().items():
        rank, name = layer(module)
        for target, line, _ in imports:
            if target.startswith("kefu.") and target in _modules():
                t_rank, t_name = layer(target)
                if t_rank > rank:
                    bad.append(f"{_modules()[module].relative_to(SRC)}:{line}: {name} imports {t_name} ({target})")
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(bad)


def test_no_cycle_between_stage_folders():
    edges: dict[str, set[str]] = {s: set() for s in STAGE_ORDER}
    for module, imports in _imports().items():
        rank, name = layer(module)
        if name not in edges:
            continue
        for target, _, _ in imports:
            if target in _modules() and layer(target)[1] in edges and layer(target)[1] != name:
                edges[name].add(layer(target)[1])
    seen: dict[str, int] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        seen[node] = 1
        for nxt in sorted(edges[node]):
            if seen.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in seen and (found := cycle_from(nxt, path + [node])):
                return found
        seen[node] = 2
        return None

    for stage in STAGE_ORDER:
        if stage not in seen:
            assert (found := cycle_from(stage, [])) is None, "stage cycle: " + " -> ".join(found)


@lru_cache(maxsize=None)
def _heavy(module: str, stack: tuple[str, ...] = ()) -> bool:
    """Whether importing ``module`` loads a heavy third-party package (through its top-level imports)."""
    for target, _, nested in _imports().get(module, ()):
        if nested:
            continue
        if target in HEAVY:
            return True
        if target in _modules() and target not in stack and _heavy(target, stack + (module,)):
            return True
    return False


def test_kefu_imports_inside_functions_only_defer_heavy_dependencies():
    bad = [f"{_modules()[m].relative_to(SRC)}:{line}: {target}"
           for m, imports in _imports().items() for target, line, nested in imports
           if nested and target in _modules() and not _heavy(target)]
    assert not bad, ("kefu modules imported inside a function though they load nothing heavy (import them at the "
                     "top of the module):\n" + "\n".join(bad))


def test_no_importlib_fallbacks_for_kefu_modules():
    bad = []
    for module, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and "import_module" in ast.unparse(node.func) and "kefu" in ast.unparse(node):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                    for h in node.handlers) and any(t.startswith("kefu") for t in _try_imports(node)):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not bad, "kefu is one wheel: import kefu modules directly, without fallbacks:\n" + "\n".join(bad)


def _try_imports(node: ast.Try) -> list[str]:
    names = []
    for child in node.body:
        for sub in ast.walk(child):
            if isinstance(sub, ast.ImportFrom):
                names.append(sub.module or "")
            elif isinstance(sub, ast.Import):
                names.extend(a.name for a in sub.names)
    return names


def test_the_walk_sees_the_package():
    """The walker is not vacuous: it finds the package's imports, ranks layers and tells heavy modules apart."""
    imports = _imports()
    assert sum(len(v) for v in imports.values()) > 300
    assert any(t == "kefu.types" for t, _, _ in imports["kefu.serve.pipeline"])
    assert layer("kefu.safety.audit") < layer("kefu.data.pipeline") < layer("kefu.serve.app")
    assert layer("kefu.text.pii") == (0, "shared") and layer("kefu.train.cli")[1] == "entry"
    assert _heavy("kefu.train.trainer") and not _heavy("kefu.types")
