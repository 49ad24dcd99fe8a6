"""Imports between petah_mm's modules run one way: the graph of internal imports has no cycle.

Every ``import`` counts, at module level or inside a function (a lazy import hides a cycle, it does not
break it). Edges go to the module a statement names: ``from .x import y`` is an edge to ``x``, or to
``x.y`` where ``y`` is a submodule; a name taken from a package (``from ..utils import f``) is an edge to
its ``__init__``, and a package ``__init__`` that re-exports its submodules has edges to them: both run at
import. Importing a module of another package is also an edge to that package's ``__init__`` (Python runs it
first), but not to the packages the importer is inside: those are already being imported, and counting them
would make every submodule a cycle with the ``__init__`` that re-exports it.
"""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

from helpers import REPO

Edges = Dict[str, Dict[str, int]]  # importer -> {imported: line of the first such import}


def module_names(root: Path, package: str) -> Dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root`` (a package is its ``__init__``)."""
    names = {}
    for path in sorted(root.rglob('*.py')):
        parts = path.relative_to(root).with_suffix('').parts
        parts = parts[:-1] if parts[-1] == '__init__' else parts
        names['.'.join((package, *parts))] = path
    return names


def resolve(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The longest prefix of ``name`` that is one of ``modules`` (None: not an internal module)."""
    parts = name.split('.')
    for end in range(len(parts), 0, -1):
        if '.'.join(parts[:end]) in modules:
            return '.'.join(parts[:end])
    return None


def import_edges(root: Path, package: str) -> Edges:
    modules = module_names(root, package)
    edges: Edges = {}
    for importer, path in modules.items():
        is_package = path.name == '__init__.py'
        targets = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets += [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    here = importer.split('.') if is_package else importer.split('.')[:-1]
                    anchor = here[:len(here) - (node.level - 1)]
                    base = '.'.join([*anchor, *([base] if base else [])])
                # a submodule named in the import list, else the module (or package) it is taken from
                targets += [(f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base, node.lineno)
                            for alias in node.names]
        for name, line in targets:
            target = resolve(name, modules)
            if target is not None and target != importer:
                for module in (*packages_entered(importer, target, modules), target):
                    edges.setdefault(importer, {}).setdefault(module, line)
    return edges


def packages_entered(importer: str, target: str, modules: Dict[str, Path]) -> List[str]:
    """The packages above ``target`` whose ``__init__`` runs first, less those ``importer`` is inside."""
    parts = target.split('.')
    above = ['.'.join(parts[:end]) for end in range(1, len(parts))]
    return [p for p in above if p in modules and importer != p and not importer.startswith(p + '.')]


def find_cycle(edges: Edges) -> Optional[List[str]]:
    """One cycle of ``edges`` as [a, b, ..., a], or None (iterative depth-first search)."""
    done: Set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(edges.get(start, {})))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done:
                path.append(child)
                on_path.add(child)
                stack.append(iter(sorted(edges.get(child, {}))))
    return None


def all_cycles(edges: Edges, limit: int = 20) -> List[List[str]]:
    """Cycles of ``edges`` until none is left, each found after cutting the last edge of the ones before."""
    edges = {importer: dict(imported) for importer, imported in edges.items()}
    found = []
    while len(found) < limit:
        cycle = find_cycle(edges)
        if cycle is None:
            break
        found.append(cycle)
        del edges[cycle[-2]][cycle[-1]]
    return found


def describe(cycle: List[str], edges: Edges, root: Path, package: str) -> str:
    files = module_names(root, package)
    return '\n'.join(f'  {a} -> {b}  ({files[a].relative_to(root.parent)}:{edges[a][b]})'
                     for a, b in zip(cycle, cycle[1:]))


def test_petah_mm_imports_have_no_cycle():
    root = REPO / 'petah_mm'
    edges = import_edges(root, 'petah_mm')
    cycles = all_cycles(edges)
    assert not cycles, ('import cycles between petah_mm modules; move what both sides need into a lower module so '
                        'that the imports run one way:\n'
                        + '\n\n'.join(describe(cycle, edges, root, 'petah_mm') for cycle in cycles))


def test_the_check_sees_relative_function_level_and_package_imports(tmp_path):
    """A cycle closed only by a lazy relative import, or through a package's ``__init__``, is found."""
    pkg = tmp_path / 'pkg'
    (pkg / 'sub').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'low.py').write_text('import os\n')
    (pkg / 'a.py').write_text('from . import low\nfrom .sub.b import g\n')
    (pkg / 'sub' / '__init__.py').write_text('from .c import h\n')
    (pkg / 'sub' / 'b.py').write_text('def g():\n    from ..a import f\n')
    (pkg / 'sub' / 'c.py').write_text('from pkg.low import x\n')
    edges = import_edges(pkg, 'pkg')
    assert edges == {'pkg.a': {'pkg.low': 1, 'pkg.sub': 2, 'pkg.sub.b': 2}, 'pkg.sub.b': {'pkg.a': 2},
                     'pkg.sub': {'pkg.sub.c': 1}, 'pkg.sub.c': {'pkg.low': 1}}
    assert find_cycle(edges) == ['pkg.a', 'pkg.sub.b', 'pkg.a']
    assert 'pkg/sub/b.py:2' in describe(find_cycle(edges), edges, pkg, 'pkg')
    (pkg / 'sub' / 'b.py').write_text('def g():\n    from .. import a\n')  # the same cycle, through `from .. import`
    assert find_cycle(import_edges(pkg, 'pkg')) == ['pkg.a', 'pkg.sub.b', 'pkg.a']
    (pkg / 'sub' / 'b.py').write_text('from . import c\n')  # a sibling: no edge to sub's own __init__
    assert import_edges(pkg, 'pkg')['pkg.sub.b'] == {'pkg.sub.c': 1} and find_cycle(import_edges(pkg, 'pkg')) is None
    (pkg / 'low.py').write_text('def late():\n    from .sub.b import c\n')  # sub's __init__ runs first: -> c -> low
    edges = import_edges(pkg, 'pkg')
    assert edges['pkg.low'] == {'pkg.sub': 2, 'pkg.sub.b': 2}
    assert all_cycles(edges) == [['pkg.low', 'pkg.sub', 'pkg.sub.c', 'pkg.low']]
