"""The libraries' log plots on a toy run's ``scalars.json``: ``analyze_logs.py`` of mmdet, mmseg and mmpretrain
(shipped in the installed packages under ``<pkg>/.mim/tools``), as a user runs them after ``tools/train.py``.
They import seaborn, which the libraries do not declare (requirements/runtime.txt installs it)."""
from pathlib import Path

import mmdet
import mmpretrain
import mmseg
import numpy as np
import pytest
from PIL import Image

from helpers import run

#: task -> the library whose analyze_logs.py reads that task's log, and its sub-command (mmseg's has none)
LIBRARIES = {'det': (mmdet, ['plot_curve']), 'seg': (mmseg, []), 'cls': (mmpretrain, ['plot_curve'])}


@pytest.mark.slow
@pytest.mark.parametrize('task', LIBRARIES)
def test_analyze_logs_draws_the_loss_curve(toy_run, tmp_path, task):
    library, subcommand = LIBRARIES[task]
    script = Path(library.__file__).parent / '.mim' / 'tools' / 'analysis_tools' / 'analyze_logs.py'
    scalars, = toy_run(task).work_dir.glob('*/vis_data/scalars.json')
    out = run(script, *subcommand, scalars, '--keys', 'loss', '--out', tmp_path / 'loss.png')
    assert 'metric is loss' in out
    image = np.asarray(Image.open(tmp_path / 'loss.png').convert('RGB')).astype(int)
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    curve = int(((blue > red + 60) & (blue > green + 20)).sum())  # matplotlib's first colour, C0, is blue
    assert curve > 200, f'{curve} blue pixels: no curve across the axes (the legend handle alone has ~30)'
