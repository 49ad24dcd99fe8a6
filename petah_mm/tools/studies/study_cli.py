"""The command line the real-data studies share: a profile (``--quick`` for the tests, the default, ``--full``)
and a work dir that holds their data, runs and results."""
import argparse
from pathlib import Path
from typing import Dict, Optional, Tuple


def parse_study_args(doc: str, quick_help: str, full_help: str, work_dir: str, argv=None,
                     switches: Optional[Dict[str, str]] = None,
                     selections: Optional[Dict[str, str]] = None) -> argparse.Namespace:
    """``switches``: a study's own on/off flags (flag -> help), beside the shared ones; ``selections``: its flags
    that take names (flag -> help)."""
    parser = argparse.ArgumentParser(description=doc.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    size = parser.add_mutually_exclusive_group()
    size.add_argument('--quick', action='store_true', help=quick_help)
    size.add_argument('--full', action='store_true', help=full_help)
    parser.add_argument('--work-dir', default=work_dir, help='data, runs and results')
    for flag, help in (switches or {}).items():
        parser.add_argument(flag, action='store_true', help=help)
    for flag, help in (selections or {}).items():
        parser.add_argument(flag, nargs='+', metavar='NAME', help=help)
    return parser.parse_args(argv)


def study_setup(args: argparse.Namespace, profiles: dict) -> Tuple[object, Path]:
    """The profile the flags chose, and the work dir, created."""
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    return profiles['quick' if args.quick else 'full' if args.full else 'default'], work_dir
