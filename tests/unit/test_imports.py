"""The import rules of ../shared/ARCHITECTURE.md, checked on the source: no circle, no wrong way.

Imports run one way: tagging core <- service <- CLI, and tagging core <- model <- export. Only the
CLI may reach model/ and export/, and only lazily (inside the training verbs).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stream", "model", "export")
TORCH_SIDE = {"torch", "transformers", "torchcrf", "onnx", "onnxscript"}
SERVICE_ONLY = {"faust", "aiokafka", "prometheus_client", "mode"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """core (stream.tagging), service (stream.service), cli (stream.cli), model or export."""
    package, _, rest = module.partition(".")
    if package != "stream":
        return package
    head = rest.split(".")[0]
    return {"tagging": "core", "service": "service", "cli": "cli", "": "core"}.get(head, f"unplaced ({module})")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level imports, imports inside functions) of one file, as absolute module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = inside_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            (lazy if inside_function else top).update(names)
            visit(child, nested)

    visit(tree, False)
    return top, lazy


def _graph() -> dict[str, tuple[set[str], set[str]]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        top, lazy = _imports(path)
        graph[name] = ({m for m in top if m in modules or m.split(".")[0] not in PACKAGES},
                       {m for m in lazy if m in modules or m.split(".")[0] not in PACKAGES})
    return graph


def _own(imports: set[str], graph) -> set[str]:
    return {m for m in imports if m in graph}


def test_no_import_circle_between_modules():
    graph = _graph()
    edges = {name: _own(top, graph) for name, (top, _) in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_one_way():
    allowed = {
        "core": {"core"},
        "service": {"core", "service"},
        "cli": {"core", "service", "cli"},
        "model": {"core", "model"},
        "export": {"core", "model", "export"},
    }
    graph = _graph()
    wrong = []
    for name, (top, lazy) in graph.items():
        layer = _layer(name)
        if layer.startswith("unplaced"):
            wrong.append(f"{name}: in neither stream.tagging, stream.service nor stream.cli")
            continue
        for target in _own(top, graph) | (_own(lazy, graph) if layer != "cli" else set()):
            if _layer(target) not in allowed[layer]:
                wrong.append(f"{name} ({layer}) imports {target} ({_layer(target)})")
        third_party = {m.split(".")[0] for m in top | lazy if m.split(".")[0] not in PACKAGES}
        if layer in ("core", "service", "cli"):
            eager_torch = {m.split(".")[0] for m in top} & TORCH_SIDE
            lazy_torch = third_party & TORCH_SIDE if layer != "cli" else set()
            if eager_torch | lazy_torch:
                wrong.append(f"{name} ({layer}) imports {sorted(eager_torch | lazy_torch)}")
        if layer == "core" and third_party & SERVICE_ONLY:
            wrong.append(f"{name} (core) imports {sorted(third_party & SERVICE_ONLY)}")
        if layer in ("model", "export") and third_party & SERVICE_ONLY:
            wrong.append(f"{name} ({layer}) imports {sorted(third_party & SERVICE_ONLY)}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_walk_sees_a_circle_and_a_wrong_direction(tmp_path, monkeypatch):
    """The checks above are only worth something if they can fail."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("from a import x\n")
    top_a, _ = _imports(tmp_path / "a.py")
    top_b, _ = _imports(tmp_path / "b.py")
    assert top_a == {"b"} and "a" in top_b
    assert _layer("stream.service.worker") == "service" and _layer("stream.tagging.tagger") == "core"
    assert _layer("stream.cli") == "cli" and _layer("model.train") == "model"


def test_no_module_over_400_lines_and_no_function_over_80():
    """Split by concern before a reader has to hold too much at once (outside tests and bench)."""
    too_long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            lines = len(source.splitlines())
            if lines > 400:
                too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: "
                                    f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, "\n".join(too_long)


def test_bench_never_imports_tests():
    wrong = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        top, lazy = _imports(path)
        wrong += [f"{path.name} imports {m}" for m in sorted(top | lazy) if m.split(".")[0] == "tests"]
    assert not wrong, "\n".join(wrong)
