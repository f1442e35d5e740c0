"""`nordlys eval [--model M] (--data DIR | --manifest CSV) --report DIR`: evaluation with the
daemon's own install (onnxruntime, numpy, Pillow; no torch, no matplotlib), so anyone running the
daemon can measure its model on their own photos. The model is the one `classify` would use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="ONNX model following the nordlys contract "
                        "(default: the config's model.path, else the bundled model, as for classify)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with aurora/ and other/ sub-folders (any depth)")
    src.add_argument("--manifest", type=Path, help="CSV file,label[,group,kind,...]; paths relative to the CSV")
    parser.add_argument("--split", choices=("train", "val"), default=None,
                        help="with --manifest pointing at a run's split.csv: evaluate one side only")
    parser.add_argument("--report", type=Path, required=True, help="folder for metrics.json, plots, report.html")
    parser.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model's)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads; 0 = its default")


def run(args: argparse.Namespace) -> int:
    from nordlys.daemon import runtime
    from nordlys.daemon.classifier import ModelError
    from nordlys.daemon.config import Config, find_config_file, load_config
    from nordlys.export.evaluate import evaluate_model
    from nordlys.export.report import write_report
    from nordlys.train.data import DataError, read_samples, read_split

    if args.split and args.manifest is None:
        print("nordlys eval: --split needs --manifest pointing at a run's split.csv", file=sys.stderr)
        return 2
    try:
        config_file = find_config_file(getattr(args, "config", None))
        config = load_config(config_file) if config_file is not None else Config()
        model = args.model.expanduser() if args.model is not None else runtime.model_path(config)
        if args.split:
            samples = read_split(args.manifest)[args.split]
        else:
            samples = read_samples(data_dir=args.data, manifest=args.manifest)
        ev = evaluate_model(model, samples, threshold=args.threshold, threads=args.threads)
    except (DataError, ValueError, KeyError) as exc:
        print(f"nordlys eval: {exc}", file=sys.stderr)
        return 2
    except ModelError as exc:
        print(f"nordlys eval: {exc}", file=sys.stderr)
        return ModelError.exit_code
    page = write_report(ev, args.report)
    s = ev.summary
    pct = {k: "n/a" if s[k] is None else f"{100 * s[k]:.2f}%" for k in ("accuracy", "balanced_accuracy", "recall", "fpr")}
    print(f"{len(ev.samples)} photos, threshold {ev.threshold:.4g}: accuracy {pct['accuracy']}, balanced accuracy "
          f"{pct['balanced_accuracy']}, aurora recall {pct['recall']}, false-positive rate {pct['fpr']}; report {page}")
    if ev.seen_in_training:
        held = ", ".join(f"{len(paths)} in its {side} split" for side, paths in sorted(ev.seen_in_training.items()))
        print(f"nordlys eval: warning: the model has seen some of these photos ({held}): the figures flatter it",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nordlys eval", description="Evaluate an ONNX model on labelled photos.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
