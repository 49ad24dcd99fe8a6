"""Argument checks of ``tools/deployment/multitask_demo.py``: ``--task NAME=PACKAGE``, each name once."""
import argparse
from typing import Dict, Sequence, Tuple


def task_spec(text: str) -> Tuple[str, str]:
    """argparse ``type`` of ``--task``: ``NAME=PACKAGE`` split in two, or argparse's error naming the argument."""
    name, sep, package = text.partition('=')
    if not (sep and name.strip() and package.strip()):
        raise argparse.ArgumentTypeError(f'{text!r} is not NAME=PACKAGE; give each task as its name, "=" and its '
                                         'package directory, e.g. --task seg=packages/seg')
    return name.strip(), package.strip()


def task_packages(specs: Sequence[Tuple[str, str]]) -> Dict[str, str]:
    """``{name: package}`` from the parsed ``--task`` values; a name given twice is refused, not overwritten."""
    names = [name for name, _ in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        given = ' '.join(f'--task {n}={p}' for n, p in specs if n in repeated)
        raise ValueError(f'--task names {", ".join(repeated)} more than once ({given}); give every task its own name')
    return dict(specs)
