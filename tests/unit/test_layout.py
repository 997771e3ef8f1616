"""The layering rule of docs/architecture.md (DESIGN.md sections 1 and 18), made executable.

`pipeline/` is a few base modules plus one subpackage per concern; domain subpackages never
import Faust or each other; `runtime/` and `agents/` wire them together; `create_app` reads
as a short list of steps; topic names live in `pipeline/names.py` only; unit tests mirror
the package. Prose drifts, so this file pins it.

It reads the source with `ast` only: no project code is imported, so it is fast and
cannot be fooled by import-time side effects. Every check collects all offenders before
failing, so one run lists everything that breaks the layout. The self-tests at the end run
the helpers on tiny inline sources, so the checks are known to be able both to fail and
to pass.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Container, Iterator
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "agents", "tables")

MAX_TOP_LEVEL_MODULES = 10
MIN_SUBPACKAGES = 5
REQUIRED_SUBPACKAGES = (
    "contract",
    "ingest",
    "identity",
    "metrics",
    "alerting",
    "lake",
    "runtime",
    "cli",
    "tools",
)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_CREATE_APP_LINES = 40

DOMAIN = tuple(
    f"pipeline.{s}"
    for s in ("contract", "ingest", "identity", "metrics", "alerting", "lake", "members")
)
FRAMEWORKS = ("faust", "mode", "aiokafka")
WIRING = tuple(f"pipeline.{s}" for s in ("runtime", "cli", "tools", "app", "worker"))
ALWAYS_ALLOWED = ("pipeline.contract", "pipeline.names", "pipeline.settings")

TOPIC_NAMES = frozenset(
    {
        "events.raw",
        "events.valid",
        "events.dlq",
        "events.stitched",
        "identity.links",
        "identity.changes",
        "metrics.partials",
        "metrics.rollups",
    }
)
NAMES_MODULE = "pipeline.names"
MIRRORED_SUBPACKAGES = REQUIRED_SUBPACKAGES


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "pipeline.ingest.codecs"; a package is named by its __init__
    path: str  # relative to the repository root, for messages
    is_package: bool
    source: str

    @property
    def tree(self) -> ast.Module:
        return _parse(self.source, self.path)


@cache
def _parse(source: str, path: str) -> ast.Module:
    return ast.parse(source, filename=path)


def module_from_source(name: str, source: str, *, is_package: bool = False) -> Module:
    """A module that exists only in memory (for the self-tests)."""
    path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return Module(name, path, is_package, source)


@cache
def project_modules() -> dict[str, Module]:
    """Every module of pipeline/, agents/ and tables/, by dotted name."""
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            is_package = rel.name == "__init__.py"
            parts = rel.parent.parts if is_package else (*rel.parent.parts, rel.stem)
            modules[".".join(parts)] = Module(
                ".".join(parts), rel.as_posix(), is_package, path.read_text(encoding="utf-8")
            )
    return modules


def function_lengths(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """(qualified name, line, length) of every function and method, nested ones included.

    The length runs from the `def` line to the last line of the body: decorators excluded.
    """
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = prefix + child.name
            if not isinstance(child, ast.ClassDef):
                assert child.end_lineno is not None
                yield name, child.lineno, child.end_lineno - child.lineno + 1
            yield from function_lengths(child, name + ".")
        else:
            yield from function_lengths(child, prefix)


def _longest_known_prefix(name: str, known: Container[str]) -> str:
    """The longest dotted prefix of `name` that is a known module; `name` if none is."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return name


def _from_base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module named by `from <base> import ...`, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: Module, known: Container[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in `module`, at any depth.

    Function-level and `if TYPE_CHECKING:` imports count. `from pkg import name` is an
    import of `pkg.name` when that is a known module, else of `pkg`. Names inside the
    project resolve to the longest known module; outside names are kept as written.
    """
    found: list[tuple[str, int]] = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(_longest_known_prefix(a.name, known), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else _longest_known_prefix(base, known)
                found.append((target, node.lineno))
    return found


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> project modules it imports (self-imports left out)."""
    return {
        name: {t for t, _ in imports_of(m, modules) if t in modules and t != name}
        for name, m in modules.items()
    }


def unit_of(name: str) -> str:
    """The package-level unit of a module: a pipeline subpackage or base module, or a
    top-level package (`agents`, `tables`); `pipeline` itself is its own unit."""
    parts = name.split(".")
    if parts[0] == "pipeline" and len(parts) > 1:
        return f"pipeline.{parts[1]}"
    return parts[0]


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges = units.setdefault(unit_of(source), set())
        edges |= {unit_of(t) for t in targets} - {unit_of(source)}
    return units


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node, as a path that
    starts and ends at the component's first node (sorted), e.g. ["a", "b", "a"]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graphs here are small
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(_cycle_through(min(c), c, graph) for c in components)


def _cycle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """Shortest path start -> ... -> start inside the component (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph.get(node, set()) & component):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if succ not in came_from:
                came_from[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is on no cycle in {sorted(component)}")


def layering_offence(own_unit: str, target: str) -> bool:
    """Whether a module of domain subpackage `own_unit` may not import `target`."""
    top = target.split(".")[0]
    if top in FRAMEWORKS or top in ("agents", "tables"):
        return True
    if top != "pipeline":
        return False
    unit = unit_of(target)
    if unit == own_unit or unit in ALWAYS_ALLOWED:
        return False
    if own_unit == "pipeline.contract" and unit in subpackage_units():
        return True
    return unit in WIRING or unit in DOMAIN


@cache
def subpackage_units() -> frozenset[str]:
    return frozenset(f"pipeline.{p.parent.name}" for p in (ROOT / "pipeline").glob("*/__init__.py"))


def docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                ids.add(id(first.value))
    return ids


def string_constants(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(value, line) of every string constant that is not a docstring."""
    docstrings = docstring_nodes(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.value, node.lineno


def agent_calls(tree: ast.AST) -> Iterator[ast.Call]:
    """Every `app.agent(...)` call (also `self.app.agent(...)`)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "agent"
        ):
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id == "app") or (
                isinstance(owner, ast.Attribute) and owner.attr == "app"
            ):
                yield node


def fail_if(offenders: list[str], what: str) -> None:
    assert not offenders, f"{what} ({len(offenders)}):\n  " + "\n  ".join(offenders)


def arrow(path: list[str]) -> str:
    return " -> ".join(path)


# --------------------------------------------------------------------------- 1. shape


def test_pipeline_is_a_few_base_modules_and_one_subpackage_per_concern() -> None:
    pipeline = ROOT / "pipeline"
    top_level = sorted(p.name for p in pipeline.glob("*.py"))
    subpackages = sorted(p.parent.name for p in pipeline.glob("*/__init__.py"))
    problems = []
    if len(top_level) > MAX_TOP_LEVEL_MODULES:
        problems.append(
            f"{len(top_level)} modules directly in pipeline/ (at most {MAX_TOP_LEVEL_MODULES}): "
            + ", ".join(top_level)
        )
    if len(subpackages) < MIN_SUBPACKAGES:
        problems.append(
            f"{len(subpackages)} subpackages in pipeline/ (at least {MIN_SUBPACKAGES}): "
            + ", ".join(subpackages)
        )
    problems += [
        f"missing subpackage pipeline/{s}/ (with __init__.py)"
        for s in REQUIRED_SUBPACKAGES
        if s not in subpackages
    ]
    fail_if(problems, "pipeline/ does not have the layout of DESIGN.md section 18")


# --------------------------------------------------------------------------- 2. sizes


def test_no_module_over_500_lines() -> None:
    offenders = [
        f"{m.path}: {n} lines"
        for m in project_modules().values()
        if (n := len(m.source.splitlines())) > MAX_MODULE_LINES
    ]
    fail_if(offenders, f"modules over {MAX_MODULE_LINES} lines")


def test_no_function_over_80_lines() -> None:
    offenders = [
        f"{m.path}:{line} {name}: {length} lines"
        for m in project_modules().values()
        for name, line, length in function_lengths(m.tree)
        if length > MAX_FUNCTION_LINES
    ]
    fail_if(offenders, f"functions over {MAX_FUNCTION_LINES} lines (def line to end)")


# --------------------------------------------------------------------------- 3. create_app


def test_create_app_reads_as_a_short_list_of_steps() -> None:
    app = project_modules().get("pipeline.app")
    assert app is not None, "pipeline/app.py is missing"
    lengths = [n for name, _, n in function_lengths(app.tree) if name == "create_app"]
    assert lengths, "pipeline/app.py defines no top-level create_app"
    assert lengths[0] <= MAX_CREATE_APP_LINES, (
        f"pipeline/app.py create_app is {lengths[0]} lines (at most {MAX_CREATE_APP_LINES}): "
        "move each step into a named function"
    )


# --------------------------------------------------------------------------- 4. cycles


def test_no_import_cycle_between_modules() -> None:
    cycles = find_cycles(import_graph(project_modules()))
    fail_if([arrow(c) for c in cycles], "import cycles between modules")


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph(project_modules())
    units = unit_graph(graph)
    offenders = []
    for cycle in find_cycles(units):
        witnesses = [
            f"{s} -> {t}"
            for a, b in pairwise(cycle)
            for s in sorted(graph)
            if unit_of(s) == a
            for t in sorted(graph[s])
            if unit_of(t) == b
        ]
        offenders.append(f"{arrow(cycle)}  (via {'; '.join(witnesses)})")
    fail_if(offenders, "import cycles between packages (pipeline subpackages/base modules)")


# --------------------------------------------------------------------------- 5. layering


def test_domain_subpackages_import_no_framework_no_wiring_and_not_each_other() -> None:
    modules = project_modules()
    offenders = [
        f"{m.path}:{line} imports {target}"
        for m in modules.values()
        if unit_of(m.name) in DOMAIN
        for target, line in imports_of(m, modules)
        if layering_offence(unit_of(m.name), target)
    ]
    fail_if(
        offenders,
        "domain subpackages (contract, ingest, identity, metrics, alerting, lake) may import "
        "only themselves, pipeline.contract, pipeline.names and pipeline.settings from the "
        "project, and no faust/mode/aiokafka; contract imports no other subpackage",
    )


# --------------------------------------------------------------------------- 6. agents


def test_one_module_per_agent_each_with_its_unit_test() -> None:
    problems = []
    for m in project_modules().values():
        if unit_of(m.name) != "agents" or m.is_package:
            continue
        stem = m.name.rpartition(".")[2]
        test = ROOT / "tests" / "unit" / "agents" / f"test_{stem}.py"
        if not test.is_file():
            problems.append(f"{m.path}: no {test.relative_to(ROOT)}")
        if not any(name == "register" for name, _, _ in function_lengths(m.tree)):
            problems.append(f"{m.path}: no top-level register(app, ctx)")
        if not any(agent_calls(m.tree)):
            problems.append(f"{m.path}: defines no agent (no app.agent(...) call)")
    fail_if(problems, "agents/ is not one tested module per agent")


def test_every_agent_has_an_explicit_name() -> None:
    offenders = [
        f"{m.path}:{call.lineno} app.agent(...) without name="
        for m in project_modules().values()
        if unit_of(m.name) == "agents"
        for call in agent_calls(m.tree)
        if not any(k.arg == "name" for k in call.keywords)
    ]
    fail_if(offenders, "agents whose name would follow the function's qualified name")


# --------------------------------------------------------------------------- 7. topic names


def test_topic_names_are_spelled_only_in_names_module() -> None:
    offenders = [
        f"{m.path}:{line} {value!r}"
        for m in project_modules().values()
        if m.name != NAMES_MODULE
        for value, line in string_constants(m.tree)
        if value in TOPIC_NAMES
    ]
    fail_if(offenders, f"topic names spelled outside {NAMES_MODULE} (import the constant)")


# --------------------------------------------------------------------------- 8. test mirror


def test_unit_tests_mirror_the_subpackages() -> None:
    problems = []
    for sub in MIRRORED_SUBPACKAGES:
        folder = ROOT / "tests" / "unit" / sub
        if not folder.is_dir():
            problems.append(f"tests/unit/{sub}/ is missing")
        elif not any(folder.glob("test_*.py")):
            problems.append(f"tests/unit/{sub}/ holds no test_*.py")
    fail_if(problems, "unit tests do not mirror pipeline/")


# --------------------------------------------------------------------------- self-tests


def _modules(*specs: tuple[str, str]) -> dict[str, Module]:
    return {name: module_from_source(name, src) for name, src in specs}


def test_self_cycle_finder_finds_a_two_module_cycle() -> None:
    mods = _modules(("pkg.a", "import pkg.b\n"), ("pkg.b", "from pkg import a\n"))
    assert find_cycles(import_graph(mods)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_self_cycle_finder_passes_an_acyclic_chain() -> None:
    mods = _modules(
        ("pkg.a", "from pkg.b import thing\n"),
        ("pkg.b", "from . import c\n"),
        ("pkg.c", "import os\n"),
    )
    graph = import_graph(mods)
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": set()}
    assert find_cycles(graph) == []


def test_self_cycle_finder_sees_function_level_and_type_checking_imports() -> None:
    mods = _modules(
        ("pkg.a", "def f():\n    from .b import x\n"),
        ("pkg.b", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import y\n"),
        ("pkg.c", "from . import a\n"),
    )
    assert find_cycles(import_graph(mods)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_self_cycle_finder_reports_packages_not_modules() -> None:
    graph = {
        "pipeline.ingest.x": {"pipeline.metrics.y"},
        "pipeline.metrics.y": set(),
        "pipeline.metrics.z": {"pipeline.ingest.w"},
        "pipeline.ingest.w": set(),
    }
    assert find_cycles(graph) == []
    assert find_cycles(unit_graph(graph)) == [
        ["pipeline.ingest", "pipeline.metrics", "pipeline.ingest"]
    ]


def test_self_function_length_excludes_decorators_and_includes_nested() -> None:
    source = (
        "@decorator\n"  # 1
        "@other(1)\n"  # 2
        "def outer():\n"  # 3
        "    async def inner():\n"  # 4
        "        return 1\n"  # 5
        "    return inner\n"  # 6
        "class C:\n"  # 7
        "    def m(self):\n"  # 8
        "        pass\n"  # 9
    )
    assert list(function_lengths(ast.parse(source))) == [
        ("outer", 3, 4),
        ("outer.inner", 4, 2),
        ("C.m", 8, 2),
    ]


def test_self_layering_and_topic_checks_can_fail() -> None:
    assert layering_offence("pipeline.ingest", "faust.types")
    assert layering_offence("pipeline.ingest", "pipeline.metrics.windows")
    assert layering_offence("pipeline.lake", "pipeline.runtime.context")
    assert not layering_offence("pipeline.ingest", "pipeline.contract.errors")
    assert not layering_offence("pipeline.ingest", "pipeline.names")
    assert not layering_offence("pipeline.ingest", "pipeline.ingest.codecs")
    assert not layering_offence("pipeline.ingest", "pyarrow")
    tree = ast.parse('"""events.raw"""\nX = "events.raw"  # events.dlq\n')
    assert list(string_constants(tree)) == [("events.raw", 2)]
