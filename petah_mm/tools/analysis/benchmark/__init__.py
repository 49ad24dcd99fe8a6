"""Measure what PETAH costs: inference latency, training step time, peak memory, sizes and FLOPs.

    python tools/analysis_tools/benchmark.py --arch l7 --size 224 --batch 8 --out-dir work_dirs/benchmark
    python tools/analysis_tools/benchmark.py --amp --inference-batches 1 8  # + bf16 rows (fp16 on CUDA), batches 1, 8
    python tools/analysis_tools/benchmark.py --config CONFIG          # that config's model.backbone
    python tools/analysis_tools/benchmark.py --device cuda --amp
    python tools/analysis_tools/benchmark.py --methods full petah2 petah2-dora petah2-lokr  # other presets' rows
    python tools/analysis_tools/benchmark.py --peft --unmerged-forms both  # + peft's LoRA, + FLOPs-rule unmerged rows
    python tools/analysis_tools/benchmark.py --ablations pooling  # of the ablation rows, only this one

One run measures, side by side (warm-up, then repeated runs, medians; ``--rounds`` repeats the
training rows in rotating order, each in a fresh process, and keeps each method's fastest round):

* inference latency of the plain backbone, merged PETAH-n and unmerged PETAH-n, as ratios to plain
  (and unmerged to merged), at each batch of ``--inference-batches`` (:mod:`.inference`); the unmerged
  LoRA layers run the inference form measured faster on this CPU (``--unmerged-forms``, cached per CPU
  in ``~/.cache/petah_mm/unmerged_forms``), and the report says how each row chose;
* a full training step (forward, backward, AdamW step; backbone + linear head) and the peak
  memory for each method, as ratios to full fine-tuning (:mod:`.training`). On the CPU the peak is the
  process's peak RSS (every method runs in a fresh process); on CUDA it is
  ``torch.cuda.max_memory_allocated`` and the timings synchronise the device;
* trainable backbone parameters, adapter file size and FLOPs (mmengine's complexity analysis with
  gradients enabled, as the libraries' ``get_flops.py`` run it; one multiply-add = one FLOP) of
  each method, merged and unmerged (:mod:`.sizes`);
* the time to switch the shared backbone from one PETAH task to another (unmerge + merge, :mod:`.switch`);
* ablations of PETAH-2 training, each undoing one optimisation of the adapter engine or the backbone
  (:mod:`.ablations`, ``--ablations`` picks them; the backbone's pooling token mixer also as inference
  rows), and with ``--peft`` the peer row: peft 0.21's LoRA on PETAH-2's targets and ranks, with petah2's
  margins over it in step time and peak memory.

With ``--amp`` every inference and training row is measured again under autocast in the dtype that
``tools/train.py --amp`` trains with on the device: bf16 on the CPU, fp16 on CUDA (rows marked "bf16" or
"fp16", training ratios to full fine-tuning in that dtype). The methods are the adapter presets of
``petah_mm.adapters.presets``; the backbone is the EfficientFormer classification trunk, or
``model.backbone`` of ``--config`` with random weights (its ``init_cfg`` is dropped: nothing is
downloaded, and time and memory do not depend on the values). It writes ``benchmark.md`` and
``benchmark.json`` to --out-dir (:mod:`.report`).
"""
from .cli import main, parse_args
from .common import precisions, row_name
from .training import summarise_rounds

__all__ = ['main', 'parse_args', 'precisions', 'row_name', 'summarise_rounds']
