"""Print (or write into README.md) the tables derived from declarations: the options (from the
option registries) and the studies' paper settings (from `fl_tff.reproductions.STUDIES`):

    python -m experiments.options_table            # print
    python -m experiments.options_table --write    # replace README.md's generated sections
"""

from absl import app
from absl import flags

from experiments import flag_parsing
from fl_tff import config, options

BEGIN, END = '<!-- options:begin (python -m experiments.options_table --write) -->', '<!-- options:end -->'
STUDIES_BEGIN = '<!-- studies:begin (python -m experiments.options_table --write) -->'
STUDIES_END = '<!-- studies:end -->'
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
    from fl_tff import reproductions
    return f'{STUDIES_BEGIN}\n{reproductions.paper_settings_markdown()}\n{STUDIES_END}'


def replace_section(text: str) -> str:
    """`text` with its generated sections replaced (ValueError when markers are missing)."""
    for begin, end, section in ((BEGIN, END, generated_section), (STUDIES_BEGIN, STUDIES_END,
                                                                  studies_section)):
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
        return 0
    with open(_README.value) as f:
        text = f.read()
    from fl_tff import files
    with files.atomic_write(_README.value) as f:
        f.write(replace_section(text))
    print(f'wrote the option and study tables into {_README.value}')
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
