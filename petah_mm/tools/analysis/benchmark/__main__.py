"""``python -m petah_mm.tools.analysis.benchmark``: what the training rows' fresh worker processes run."""
from .cli import main

main()
