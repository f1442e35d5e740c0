"""`nordlys train`: arguments in, one call to nordlys.train.train.main, an exit code out."""

from __future__ import annotations

import argparse
import sys

from nordlys.train import options
from nordlys.train.data import DataError
from nordlys.train.options import TrainError

REQUIRES = ("torch", "torchvision", "matplotlib")  # nordlys[train]; checked by the CLI before run()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        options.check_arguments(args)
        from nordlys.train.train import main  # torch is imported only when training

        result = main(args)
    except (DataError, TrainError) as exc:
        print(f"nordlys train: {exc}", file=sys.stderr)
        return 2
    val = result["val"]
    where = (f"out of fold ({val['count']} photos, {result['cv']['folds']}-fold cross-validation; the model "
             f"was then trained on all of them)" if "cv" in result else f"on {val['count']} validation photos")
    # the log (-v) has every epoch; without it this line is what a person sees at the end
    print(f"{args.output_dir}: best epoch {result['best_epoch']}, threshold {val['threshold']:.4g}; {where}: "
          f"accuracy {val['accuracy']:.4f}, recall {_fmt(val['recall'])}, "
          f"false-positive rate {_fmt(val['fpr'])} (PyTorch scores; export measures the ONNX model again). "
          f"Next: nordlys export {args.output_dir} --out model.onnx")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nordlys train", description="Train an aurora/other classifier.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
