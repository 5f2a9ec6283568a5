"""Print (or write into README.md) the sections derived from declarations: the options (from the
option registries), the studies' paper settings (from `fl_tff.studies.STUDIES`) and the
module map (from each package's and module's docstring):

    python -m experiments.options_table            # print
    python -m experiments.options_table --write    # replace README.md's generated sections
"""

import ast
import os
import textwrap

from absl import app
from absl import flags

from experiments import flag_parsing
from fl_tff import config, options

BEGIN, END = '<!-- options:begin (python -m experiments.options_table --write) -->', '<!-- options:end -->'
STUDIES_BEGIN = '<!-- studies:begin (python -m experiments.options_table --write) -->'
STUDIES_END = '<!-- studies:end -->'
MODULES_BEGIN = '<!-- modules:begin (python -m experiments.options_table --write) -->'
MODULES_END = '<!-- modules:end -->'
MAPPED = ('fl_tff', 'experiments', 'benchmarks')  # The trees the module map shows.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAME_WIDTH, _WIDTH = 24, 100
_WRITE = flags.DEFINE_bool('write', False, 'Replace the section of --readme between the markers.')
_README = flags.DEFINE_string('readme', 'README.md', 'The file whose generated section to replace.')


def generated_section() -> str:
    """The README section: the option tables and the capabilities they mention."""
    capabilities = '\n'.join(f'| `{name}` | {text} |' for name, text in options.CAPABILITIES.items())
    return (f'{BEGIN}\n{options.markdown_tables(config.REGISTRIES)}\n#### Capabilities\n\n'
            f'| capability | meaning |\n|---|---|\n{capabilities}\n\n'
            '#### Options that do not combine\n\n'
            'Each refusal as declared by the option that refuses (its `excludes`), with its '
            'reason; the flags refuse these pairs in one line before any work.\n\n'
            f'{options.exclusions_table(config.REGISTRIES)}\n{END}')


def studies_section() -> str:
    """The README section: each study's paper datasets and settings."""
    from fl_tff import studies
    return f'{STUDIES_BEGIN}\n{studies.paper_settings_markdown()}\n{STUDIES_END}'


def _summary(path: str) -> str:
    """The first sentence of a file's docstring (read, not imported), on one line."""
    with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read(), path)) or ''
    paragraph = ' '.join(doc.split('\n\n')[0].split())
    end = next((i + 1 for i in range(len(paragraph)) if paragraph[i] == '.'
                and (i + 1 == len(paragraph) or paragraph[i + 1] == ' ')
                and not paragraph[:i + 1].endswith(('e.g.', 'i.e.', 'et al.', 'vs.'))),
               len(paragraph))
    return paragraph[:end].rstrip(':') or '(no docstring)'


def _line(name: str, depth: int, summary: str) -> str:
    first = '  ' * depth + name
    indent = ' ' * _NAME_WIDTH
    if len(first) >= _NAME_WIDTH - 1:
        return first + '\n' + textwrap.fill(summary, _WIDTH, initial_indent=indent,
                                             subsequent_indent=indent)
    return textwrap.fill(summary, _WIDTH, initial_indent=first.ljust(_NAME_WIDTH),
                         subsequent_indent=indent)


def module_map(root: str = _ROOT) -> str:
    """The map of `MAPPED`: each folder with its package docstring's first sentence, then its
    modules (each with its own), sub-packages after the modules."""
    lines = []

    def folder(path: str, depth: int) -> None:
        names = sorted(os.listdir(path))
        modules = [n for n in names if n.endswith('.py') and n != '__init__.py']
        packages = [n for n in names if os.path.isfile(os.path.join(path, n, '__init__.py'))]
        for name in modules:
            lines.append(_line(name, depth, _summary(os.path.join(path, name))))
        for name in packages:
            lines.append(_line(name + '/', depth, _summary(os.path.join(path, name, '__init__.py'))))
            folder(os.path.join(path, name), depth + 1)

    for top in MAPPED:
        init = os.path.join(root, top, '__init__.py')
        lines.append(_line(top + '/', 0, _summary(init) if os.path.isfile(init) else ''))
        folder(os.path.join(root, top), 1)
    return '\n'.join(lines)


def modules_section() -> str:
    """The README section: the module map, from the docstrings."""
    return f'{MODULES_BEGIN}\n```\n{module_map()}\n```\n{MODULES_END}'


def replace_section(text: str) -> str:
    """`text` with its generated sections replaced (ValueError when markers are missing)."""
    for begin, end, section in ((BEGIN, END, generated_section), (STUDIES_BEGIN, STUDIES_END,
                                                                  studies_section),
                                (MODULES_BEGIN, MODULES_END, modules_section)):
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f'the README has no generated section ({begin} ... {end})')
        text = text[:start] + section() + text[stop + len(end):]
    return text


def main(argv) -> int:
    del argv
    from fl_tff import runtime
    runtime.drop_stock_context()  # Else TFF's unused stock context prints a traceback at exit.
    if not _WRITE.value:
        print(generated_section())
        print(studies_section())
        print(modules_section())
        return 0
    with open(_README.value) as f:
        text = f.read()
    from fl_tff import files
    with files.atomic_write(_README.value) as f:
        f.write(replace_section(text))
    print(f'wrote the option and study tables and the module map into {_README.value}')
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
