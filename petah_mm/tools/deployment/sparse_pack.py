"""Convert a sparse backbone checkpoint between the dense .pth and the compact values + bitmask form.

    python tools/model_converters/sparse_pack.py pack checkpoints/ef-l7-sparse90.pth ef-l7-sparse90.safetensors
    python tools/model_converters/sparse_pack.py unpack ef-l7-sparse90.safetensors checkpoints/ef-l7-sparse90.pth

``pack`` stores the state dict and meta of the checkpoint (not its optimizer or other training
state, which it names); ``unpack`` writes the identical state dict back as a ``.pth`` that
``init_cfg=dict(type='Pretrained', ...)`` loads. The round trip is bit for bit lossless; the
format is described in :mod:`petah_mm.sparse.storage`. An existing ``dst`` is refused unless ``--force``,
and ``dst`` may never be ``src``.
"""
import argparse
from pathlib import Path

from petah_mm.sparse import read_checkpoint, read_packed, write_checkpoint, write_packed
from petah_mm.utils import check_output_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['pack', 'unpack'])
    parser.add_argument('src', help='.pth to pack, or .safetensors to unpack')
    parser.add_argument('dst', help='file to write')
    parser.add_argument('--force', action='store_true', help='replace an existing dst')
    args = parser.parse_args(argv)
    check_output_path(args.dst, args.force, inputs=[args.src])
    if args.command == 'pack':
        state, meta, others = read_checkpoint(args.src)
        if others:
            print(f'not packed (training state, not weights): {", ".join(others)}')
        size = write_packed(args.dst, state, meta, force=args.force)
    else:
        state, meta = read_packed(args.src)
        size = write_checkpoint(args.dst, state, meta, force=args.force)
    src_size = Path(args.src).stat().st_size
    print(f'{args.command}ed {len(state)} tensors: {args.src} ({src_size / 1e6:.2f} MB) -> {args.dst} '
          f'({size / 1e6:.2f} MB, {size / src_size:.1%})')


if __name__ == '__main__':
    main()
