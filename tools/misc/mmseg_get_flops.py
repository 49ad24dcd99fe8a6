"""mmseg's own ``tools/analysis_tools/get_flops.py``, run unchanged except for one call that mmengine refuses.

mmseg 1.2.2's script calls ``get_model_complexity_info(model, input_shape, inputs=...)``, and mmengine 0.10.7
raises ``"input_shape" and "inputs" cannot be both set`` for every mmseg model, petah_mm's or not. This runs
the installed script with that call given ``inputs`` only (the same tensor of ``--shape``). Same arguments:

    python tools/misc/mmseg_get_flops.py configs/toy/fpn_ef-l1-petah2_toy-ade20k.py --shape 128 128
"""
import runpy
from pathlib import Path

import mmengine.analysis
import mmseg

SCRIPT = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'analysis_tools' / 'get_flops.py'
count_complexity = mmengine.analysis.get_model_complexity_info


def complexity_of_inputs(model, input_shape=None, inputs=None, **kwargs):
    return count_complexity(model, None if inputs is not None else input_shape, inputs=inputs, **kwargs)


if __name__ == '__main__':
    if not SCRIPT.is_file():
        raise FileNotFoundError(f'{SCRIPT} is missing: mmsegmentation 1.2.2 ships it inside the package')
    mmengine.analysis.get_model_complexity_info = complexity_of_inputs
    runpy.run_path(str(SCRIPT), run_name='__main__')
