"""The library's layout, read from its own imports (every `import`, at module level or inside a
function): no module imports itself back through others, and the rooms (each package of
`fl_tff/`, each flat module) stack as floors, none importing a room that imports it. The drivers
(`experiments/`) and benchmarks sit on top: the library never imports them."""

import ast
import os

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = 'fl_tff'


def _modules() -> dict[str, str]:
    """Dotted name -> path of every module of the package (a package is its __init__)."""
    found = {}
    for folder, _, names in os.walk(os.path.join(REPO_ROOT, PACKAGE)):
        for name in names:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, REPO_ROOT)[:-3].split(os.sep)
                if parts[-1] == '__init__':
                    parts = parts[:-1]
                found['.'.join(parts)] = path
    return found


def _imports(path: str, module: str, modules: set[str]) -> set[str]:
    """The package's modules that `module` imports (a name imported from a package is its
    submodule when there is one, else the package)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # Relative: resolved against the importing module's package.
                anchor = module.split('.')[:len(module.split('.')) - node.level + (
                    1 if path.endswith('__init__.py') else 0)]
                base = '.'.join([*anchor, *([base] if base else [])])
            names = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a package's names.
                name = name.rpartition('.')[0]
            if name and name != module:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, m, set(modules)) for m, p in modules.items()}


def _room(module: str) -> str:
    """A module's room: its package under fl_tff/ (fl_tff.data for fl_tff.data.arrays), or
    itself for a flat module."""
    parts = module.split('.')
    return '.'.join(parts[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _edges_within(graph, component):
    return sorted(f'{a} -> {b}' for a in component for b in graph[a] if b in component)


def test_the_reader_sees_imports_inside_functions_and_from_packages():
    graph = _graph()
    assert 'fl_tff.data.tff_datasets' in graph['fl_tff.data.datasets']  # Module level.
    assert 'fl_tff.data.arrays' in graph['fl_tff.data.datasets']  # `from ... import name`.
    assert 'fl_tff.tff_compat' in graph['fl_tff.data.tff_datasets']  # Inside a function.
    assert 'fl_tff.data.datasets' in graph['fl_tff.data']  # A package's __init__.
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_no_module_imports_itself_back_through_others():
    graph = _graph()
    # A package's __init__ re-exports its modules: leave those edges out (they point down).
    modules = {m: {i for i in imports if not (i.startswith(m + '.'))} for m, imports in graph.items()}
    circles = _cycles(modules)
    assert not circles, '\n'.join(
        f'circle: {c}: ' + '; '.join(_edges_within(modules, c)) for c in circles)


def test_rooms_stack_as_floors_with_no_arrow_back_up():
    graph = _graph()
    rooms: dict[str, set[str]] = {}
    for module, imports in graph.items():
        if module == PACKAGE:
            continue  # The package's own __init__ is the front door, above every room.
        rooms.setdefault(_room(module), set()).update(
            _room(i) for i in imports if _room(i) != _room(module) and i != PACKAGE)
    circles = _cycles(rooms)
    why = {tuple(c): [f'{a} -> {b}' for a, imports in graph.items() if _room(a) in c
                      for b in imports if _room(b) in c and _room(b) != _room(a)]
           for c in circles}
    assert not circles, why


@pytest.mark.parametrize('top', ['experiments', 'benchmarks', 'tests'])
def test_the_library_never_imports_its_drivers_benchmarks_or_tests(top):
    graph = {m: _imports(p, m, set(_modules()) | {top}) for m, p in _modules().items()}
    assert not [m for m, imports in graph.items() if top in imports]
