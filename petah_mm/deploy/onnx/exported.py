"""What every exporter and every check of a graph share, below them all so that imports run one way.

:mod:`.export` and :mod:`.verify` dispatch each task to its exporter and its check (detection:
:mod:`.detection`); both sides build on this module: the opset, the merge around an export, the record of
a written graph and the verdict of a check.
"""
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple, Union

from torch import nn

OPSET = 17
PathLike = Union[str, Path]


@dataclass
class ExportedGraph:
    path: Path
    task: str
    shape: Tuple[int, int]
    input_name: str
    output_names: Tuple[str, ...]
    dynamic_batch: bool = True

    def describe(self) -> str:
        batch = 'N' if self.dynamic_batch else '1'
        return (f'{self.path} ({self.path.stat().st_size / 1e6:.1f} MB, {self.task}): input {self.input_name!r} '
                f'({batch}, 3, {self.shape[0]}, {self.shape[1]}), {"dynamic" if self.dynamic_batch else "fixed"} '
                'batch, height and width fixed; outputs '
                f'{", ".join(map(repr, self.output_names))}')


@contextmanager
def merged(model: nn.Module):
    """``model`` with its backbone's adapters merged (if it has any), unmerged again afterwards."""
    backbone = model.backbone
    merge = hasattr(backbone, 'merge_adapters') and not backbone.is_merged
    if merge:
        backbone.merge_adapters()
    try:
        yield model
    finally:
        if merge:
            backbone.unmerge_adapters()


@dataclass
class Verification:
    lines: List[str] = field(default_factory=list)
    ok: bool = True
    what: str = 'verification'

    def add(self, line: str, ok: bool) -> None:
        self.lines.append(f'{"ok  " if ok else "FAIL"} {line}')
        self.ok = self.ok and ok

    def report(self) -> str:
        return '\n'.join([*self.lines, f'{self.what} {"passed" if self.ok else "FAILED"}'])
