"""tools/misc/make_toy_backbone.py: the documented command, with no argument, prepares what the toy configs load."""

import pytest
import torch
from mmengine.config import Config

from helpers import CLS_TOY, DET_TOY, REPO, SEG_TOY, TOY_BACKBONE, run_script


@pytest.mark.parametrize('config', [CLS_TOY, DET_TOY, SEG_TOY], ids=lambda path: path.stem)
def test_toy_configs_load_the_shared_toy_backbone(config):
    assert Config.fromfile(config).model.backbone.init_cfg.checkpoint == TOY_BACKBONE


def test_the_documented_command_writes_the_toy_backbone_where_the_configs_look(tmp_path, toy_backbone):
    """``python tools/misc/make_toy_backbone.py``, as the toy configs and docs/openmmlab_tools.md say, run in a
    fresh working directory: the seed-0 L1 backbone lands at the configs' path."""
    documented = [line for path in (CLS_TOY, DET_TOY, SEG_TOY, REPO / 'docs' / 'openmmlab_tools.md')
                  for line in path.read_text().splitlines() if 'make_toy_backbone.py' in line]
    assert documented and all('`python tools/misc/make_toy_backbone.py`' in line for line in documented), documented
    proc = run_script(REPO / 'tools' / 'misc' / 'make_toy_backbone.py', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = tmp_path / TOY_BACKBONE
    assert proc.stdout.strip() == TOY_BACKBONE and written.is_file()
    state, reference = (torch.load(path, weights_only=True)['state_dict'] for path in (written, toy_backbone))
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
