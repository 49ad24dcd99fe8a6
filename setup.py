"""petah_mm: parameter-efficient task adaptation for hybrid vision backbones (OpenMMLab)."""
from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name):
    lines = (Path(__file__).parent / 'requirements' / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setup(
    name='petah_mm',
    version='0.1.0',
    description='PETAH adapters (LoRA + convolutional LoRA) for EfficientFormer in mmdet, mmseg and mmpretrain',
    long_description=(Path(__file__).parent / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['petah_mm', 'petah_mm.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt'), 'dev': read_requirements('dev.txt'),
                    'deploy': read_requirements('deploy.txt')},
    license='Apache-2.0',
)
