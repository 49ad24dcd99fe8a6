"""The time of a task switch in merge mode."""
from petah_mm.testing import randomise_adapters
from petah_mm.utils.timing import median_ms
from .common import backbone_for


def switch_time(args):
    """A task switch in merge mode: unmerge one PETAH-2 adapter set, merge another (same cost)."""
    backbone = backbone_for(args, 'petah2')
    randomise_adapters(backbone)
    backbone.merge_adapters()

    def switch():
        backbone.unmerge_adapters()
        backbone.merge_adapters()

    return median_ms(switch, args.warmup, args.repeats, args.device)
