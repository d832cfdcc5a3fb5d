"""The package's import graph has no cycles — also counting imports inside functions, which are
often a loop dodged rather than removed —, its arrows point down the layers, and every module imports."""

from __future__ import annotations

import ast
import importlib

from conftest import REPO

PACKAGE = REPO / "xnet"


def module_name(path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module → the xnet modules it imports anywhere in its code (``TYPE_CHECKING`` blocks aside);
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.startswith("xnet")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xnet"):
                targets |= {owner(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = {t for t in targets if t and t not in (name, "xnet")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert "xnet.archs.xunit" in graph and "xnet.kernels.gate" in graph["xnet.archs.xunit"]  # the graph is real
    assert cycles(graph) == []


#: the commands that only run the library: nothing in the package imports them
COMMANDS = {"xnet.train", "xnet.evaluate", "xnet.restore", "xnet.export", "xnet.compare", "xnet.zoo"}


def test_no_module_imports_a_command():
    graph = import_graph()
    assert set(graph) >= COMMANDS
    assert {m: sorted(targets & COMMANDS) for m, targets in graph.items() if targets & COMMANDS} == {}


#: the layers, bottom first: a module may import its own layer and those below, never one above
LAYERS = (
    ("xnet.protocol",),  # tasks, degradations, image I/O, colour, rounding, metrics, errors
    ("xnet.utils",),  # config, build, Hydra jobs, memory, precision, progress, validation
    ("xnet.kernels",),  # the xUnit's kernels and their wrappers
    ("xnet.archs",),  # pure nn.Modules
    ("xnet.data",),  # sources, training pairs, the data module
    ("xnet.lit", "xnet.deploy"),  # training; fused inference, weights, the scoring loop
    ("xnet.figures", "xnet.benchmark"),  # the paper's figures, speed and memory
)


def layer(module: str) -> int:
    """The layer of ``module``; anything outside the packages above is a command (the top)."""
    for i, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in packages):
            return i
    return len(LAYERS)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets if layer(t) > layer(m))


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert "xnet.protocol.tasks" in graph and "xnet.kernels.dispatch" in graph["xnet.archs.xunit"]
    assert upward_imports(graph) == []


def test_the_protocol_imports_nothing_else_of_xnet():
    graph = import_graph()
    assert {
        m: sorted(t for t in targets if not t.startswith("xnet.protocol"))
        for m, targets in graph.items()
        if m.startswith("xnet.protocol")
    } == {m: [] for m in graph if m.startswith("xnet.protocol")}


def test_the_layer_check_finds_an_upward_import():
    assert upward_imports({"xnet.protocol.tasks": {"xnet.data.device"}, "xnet.train": {"xnet.lit.module"}}) == [
        ("xnet.protocol.tasks", "xnet.data.device")
    ]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_imports():
    for path in sorted(PACKAGE.rglob("*.py")):
        importlib.import_module(module_name(path))
