"""Reproductions of published results, each a small set of labelled experiment configs: one
module per study (its variants, table and plot), registered in `registry` by one line.

`run_study(name, ...)` runs the configs with `run_experiment` and writes `<name>.png` and
`<name>.md` (the numbers, the command, the settings) to the output directory.
"""

from fl_tff.studies.base import PaperSetting, Rows, Study, Tuning
from fl_tff.studies.registry import STUDIES
from fl_tff.studies.run import (RealData, paper_setting, paper_settings_markdown, run_study,
                                study_configs)

__all__ = ['STUDIES', 'PaperSetting', 'RealData', 'Rows', 'Study', 'Tuning', 'paper_setting',
           'paper_settings_markdown', 'run_study', 'study_configs']
