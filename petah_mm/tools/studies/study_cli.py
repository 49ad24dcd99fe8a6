"""The command line the real-data studies share: a profile (``--quick`` for the tests, the default, ``--full``)
and a work dir that holds their data, runs and results."""
import argparse
import re
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
    parser.add_argument('--out-name', metavar='STEM',
                        help="the results' file name, without suffix (default: one built from the flags); "
                             'keeps a narrowed summary from overwriting another')
    for flag, help in (switches or {}).items():
        parser.add_argument(flag, action='store_true', help=help)
    for flag, help in (selections or {}).items():
        parser.add_argument(flag, nargs='+', metavar='NAME', help=help)
    return parser.parse_args(argv)


def results_stem(args: argparse.Namespace, default: str) -> str:
    """``--out-name`` if given, else ``default``; a name that would leave the work dir is refused."""
    name = default if args.out_name is None else args.out_name
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', name):
        raise ValueError(f'--out-name {name!r}: use letters, digits, "_", "-" and "." only (a file name inside '
                         '--work-dir, without suffix), e.g. --out-name transfer_study_vit_inits')
    return name


def study_setup(args: argparse.Namespace, profiles: dict) -> Tuple[object, Path]:
    """The profile the flags chose, and the work dir, created."""
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    return profiles['quick' if args.quick else 'full' if args.full else 'default'], work_dir
