"""`nordlys export RUN --out model.onnx [--int8]`: arguments in, one call to export_model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REQUIRES = ("torch", "torchvision", "onnx", "onnxscript")  # nordlys[train]; checked by the CLI before run()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, metavar="RUN", help="run directory written by `nordlys train`")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--int8", action="store_true",
                        help="ship a static int8 (QDQ) model, refused if it loses > 0.5 points of accuracy")
    parser.add_argument("--max-fpr", type=float, default=None,
                        help="threshold rule's false-positive limit (default: the run's, 0.02)")
    parser.add_argument("--calibration-photos", type=int, default=256, help="training photos for int8 calibration")


def run(args: argparse.Namespace) -> int:
    from nordlys.export.export import export_model
    from nordlys.export.onnx_export import ExportError

    try:
        result = export_model(args.run, args.out, int8=args.int8, max_fpr=args.max_fpr,
                              calibration_photos=args.calibration_photos)
    except ExportError as exc:
        print(f"nordlys export: {exc}", file=sys.stderr)
        return exc.exit_code
    kind = "int8" if "int8" in result else "fp32"
    shipped = result[kind]
    # the same figures as the last `evaluated` log line: the shipped model on the validation split,
    # at the threshold the rule chose for it (not at 0.5, and not the training run's PyTorch scores)
    where = "out-of-fold scores of" if result["validation"] != "validation split" else "on"
    print(f"{args.out}: {result['version']} ({kind}), threshold {result['threshold']:.4g}; {where} {shipped['count']} "
          f"validation photos at that threshold: accuracy {shipped['accuracy']:.4f}, recall {shipped['recall']:.4f}, "
          f"false-positive rate {shipped['fpr']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nordlys export", description="Export a training run to ONNX.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
