"""The README's module map ("How it is built") names every module of the package, the drivers
and the benchmarks, so a new module cannot land without its line."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_map() -> str:
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
    section = text[text.index('## How it is built'):]
    return section[section.index('```'):section.index('```', section.index('```') + 3)]


def _modules(package: str) -> list[str]:
    """Every .py file under `package` except __init__.py, relative to the repository."""
    out = []
    for directory, _, names in os.walk(os.path.join(ROOT, package)):
        out += [os.path.relpath(os.path.join(directory, n), ROOT) for n in names
                if n.endswith('.py') and n != '__init__.py']
    return sorted(out)


def _named(module: str, text: str) -> bool:
    """Whether `text` names `module`: its path, or its file name under its directory's entry
    (`fl_tff/x/y.py` as `y.py` after `x/`; top-level `fl_tff/y.py` as `y.py`)."""
    name = os.path.basename(module)
    parts = module.split(os.sep)
    if parts[0] in ('experiments', 'benchmarks'):
        return module in text or (
            name in text and f'{parts[0]}/' in text)
    if len(parts) == 2:  # fl_tff/y.py
        return re.search(rf'(^|[\s,(]){re.escape(name)}', text, re.M) is not None
    entry = text.find(f'  {parts[1]}/')
    following = text[entry:]
    end = re.search(r'^  \S', following[3:], re.M)  # The next entry of the map.
    return entry >= 0 and name in (following if end is None else following[:end.start() + 3])


def test_the_module_map_names_every_module():
    text = _module_map()
    missing = [m for p in ('fl_tff', 'experiments', 'benchmarks') for m in _modules(p)
               if not _named(m, text)]
    assert not missing, f'add these to the README\'s module map: {missing}'


def test_the_check_finds_a_missing_module():
    """Negative control: a map without a module's line is caught."""
    text = _module_map().replace('krum.py', 'kr_um.py')
    assert not _named(os.path.join('fl_tff', 'robust', 'krum.py'), text)
    assert _named(os.path.join('fl_tff', 'robust', 'bulyan.py'), text)
    assert not _named(os.path.join('fl_tff', 'new_module.py'), text)
