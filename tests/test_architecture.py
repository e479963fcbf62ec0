"""The package's folders are its architecture, and this keeps them so.

It reads every module's imports (those inside functions too) and fails on an import cycle, on an
import from a lower layer to a higher one or between two components of the same layer, and on a
module longer than about 400 lines.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "auditd"

# Lowest first. A component may import its own modules and any component of a lower layer.
LAYERS = [
    {"auditd", "auditd.model", "auditd.merkle"},           # rules and representations, no I/O
    {"auditd.schemas", "auditd.config", "auditd.geo",      # what clients send; settings; places;
     "auditd.client",                                      # the Python 3 client of the API;
     "auditd.leaves", "auditd.checkpoint"},                # tamper evidence's leaves, signatures
    {"auditd.verify"},                                     # the stand-alone verifier
    {"auditd.store", "auditd.formats"},                    # storage backends; file formats
    {"auditd.streams", "auditd.tasks"},                    # live streams; background tasks
    {"auditd.http"},                                       # the API
    {"auditd.server"},                                     # the process
    {"auditd.cli", "auditd.pytest_plugin"},                # the commands; the test fixture
    {"auditd.__main__"},
]
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The auditd modules `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    found.discard(name)
    return found


def component(module: str) -> str:
    """The layer component a module belongs to: its longest listed prefix."""
    best = None
    for layer in LAYERS:
        for comp in layer:
            if (module == comp or module.startswith(comp + ".")) and (
                    best is None or len(comp) > len(best)):
                best = comp
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def rank(comp: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if comp in layer)


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_no_import_goes_up_or_sideways():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            here, there = component(module), component(target)
            if here != there and rank(there) >= rank(here):
                wrong.append(f"{module} imports {target} ({here} may not depend on {there})")
    assert wrong == []


def test_no_import_cycle():
    edges, cycles = graph(), []
    state = dict.fromkeys(edges, 0)          # 0 new, 1 on the path, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state[nxt] == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif state[nxt] == 0:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node, [node])
    assert cycles == []


def test_modules_stay_small():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checks_see_what_they_should():
    """The graph is not empty and resolves relative imports, function-level ones included."""
    edges = graph()
    assert "auditd.store.interface" in edges["auditd.store.sqlite"]
    assert "auditd.model.actions" in edges["auditd.store.sqlite.jobs"]
    assert "auditd.server.run" in edges["auditd.cli.serve"]          # imported inside a function
    assert component("auditd.store.sqlite.jobs") == "auditd.store"
