"""Export a trained task to ONNX (adapters merged), optionally int8, and check it against PyTorch.

Classification and semantic segmentation go through ``torch.onnx.export``; detectors (Cascade
(Mask) R-CNN) through mmdeploy with petah_mm's compatibility layer. See docs/deployment.md.
"""
import argparse

from petah_mm.deploy import build_trained_model
from petah_mm.deploy.onnx import export_onnx, int8_path, onnx_top1, quantize_graph, verify_export
from petah_mm.deploy.onnx.plain import compare_with_plain


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a trained (or published) checkpoint')
    parser.add_argument('out', help='ONNX file to write (the int8 graph goes to OUT.int8.onnx)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width the graph accepts (default: the first test image after '
                        'the pipeline)')
    parser.add_argument('--int8', action='store_true', help='also write a static QDQ int8 graph')
    parser.add_argument('--calib-images', type=int, default=32,
                        help='training images to calibrate the int8 graph on (default 32)')
    parser.add_argument('--verify', action='store_true',
                        help='run ONNX Runtime against PyTorch on test images and print the comparison')
    parser.add_argument('--verify-images', type=int, default=4, help='test images --verify compares (default 4)')
    parser.add_argument('--compare-plain', action='store_true',
                        help='export the plain model the merged weights load into (and its int8 graph) and check '
                        'that the graphs hold the same ops (exit 1 if not)')
    parser.add_argument('--force', action='store_true', help='replace existing output files')
    args = parser.parse_args(argv)
    if args.calib_images != parser.get_default('calib_images') and not args.int8:
        parser.error('--calib-images calibrates the int8 graph: add --int8')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg, model, _ = build_trained_model(args.config, args.checkpoint)
    inputs = [args.config, args.checkpoint]
    graph = export_onnx(model, cfg, args.out, shape=args.shape, force=args.force, inputs=inputs)
    print(f'ONNX graph {graph.describe()}')
    int8 = None
    if args.int8:
        int8 = quantize_graph(graph, cfg, model, args.calib_images, int8_path(args.out), args.force, inputs)
        print(f'int8 graph {int8.describe()}')
    ok = True
    if args.compare_plain:
        ops = compare_with_plain(model, cfg, [g for g in (graph, int8) if g is not None], args.calib_images)
        print(ops.report())
        ok = ops.ok
    if not args.verify:
        return 0 if ok else 1
    result = verify_export(model, cfg, graph, args.verify_images)
    print(result.report())
    if int8 is not None and graph.task == 'classification':
        fp32, q8 = onnx_top1(graph, cfg, model), onnx_top1(int8, cfg, model)
        print(f'test top-1 in ONNX Runtime: fp32 {100 * fp32:.2f} %, int8 {100 * q8:.2f} % '
              f'(change {100 * (q8 - fp32):+.2f} points)')
    return 0 if ok and result.ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
