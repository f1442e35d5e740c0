"""`nordlys train` options and their defaults, torch-free so that building the CLI stays cheap
(the `nordlys` command builds every verb's parser; only `train` itself may import torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nordlys.daemon.contract import RESIZE_MODES
from nordlys.train.metrics import DEFAULT_MAX_FPR

AUGMENTS = ("basic", "phone")  # TrainPreset augmentations
BACKBONES = ("resnet50", "mobilenet_v2")  # torchvision architectures the trainer can build
MODES = ("head", "finetune")  # head: frozen backbone; finetune: the last stages learn too


class TrainError(ValueError):
    """The run cannot start as asked (an argument, the weights); the message says what to pass."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`nordlys train` options; defaults are plain values with their units."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with aurora/ and other/ sub-folders (any depth)")
    src.add_argument("--manifest", type=Path, help="CSV file,label[,group,...]; paths relative to the CSV")
    parser.add_argument("--output-dir", type=Path, required=True, help="run directory to write (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    parser.add_argument("--backbone", default="resnet50", choices=BACKBONES, help="torchvision architecture")
    parser.add_argument("--weights", default=None,
                        help="ImageNet weights: omitted = torchvision download; PATH = local torchvision "
                             "state_dict; 'none' = random initialisation")
    parser.add_argument("--mode", default="finetune", choices=MODES,
                        help="head: frozen backbone; finetune: also the last --unfreeze stages")
    parser.add_argument("--unfreeze", type=int, default=None,
                        help="stages to train in finetune mode (default: resnet50 1 = layer4, mobilenet_v2 5 blocks)")
    parser.add_argument("--input-size", type=int, default=224, help="square model input, pixels")
    parser.add_argument("--resize", default="squash", choices=RESIZE_MODES,
                        help="how a photo becomes a square, in training and in the exported model")
    parser.add_argument("--cache-scale", type=float, default=1.15, help="RAM copy's shorter side / input size")
    parser.add_argument("--epochs", type=int, default=15, help="at most this many passes")
    parser.add_argument("--patience", type=int, default=4, help="epochs without a lower validation loss before stopping")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the head")
    parser.add_argument("--backbone-lr-scale", type=float, default=0.3, help="backbone lr = lr * this")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="0..1")
    parser.add_argument("--hard-negative-weight", type=float, default=1.0,
                        help="how much more often kind=hard_negative photos are drawn")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out, by group")
    parser.add_argument("--max-fpr", type=float, default=DEFAULT_MAX_FPR,
                        help="threshold rule: highest balanced accuracy with at most this false-positive rate")
    parser.add_argument("--augment", default="basic", choices=AUGMENTS,
                        help="basic: mild crop, flip, brightness/contrast; phone: also exposure, white balance, "
                             "blur, noise and JPEG artefacts, crops that keep the sky")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="K-fold cross-validation over groups chooses the epoch count (of --epochs) and the "
                             "threshold from out-of-fold scores, then the model is trained on all photos; "
                             "--val-fraction and --patience are then unused. 0 = one validation split")
    parser.add_argument("--views", type=int, default=8,
                        help="with --cv: augmented views per photo, computed once through the frozen stages")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="with --cv: folder that keeps those features between runs with the same photos, "
                             "backbone, weights, input size and augmentation")
    parser.add_argument("--seed", type=int, default=0, help="split, sampling and augmentation seed")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")


def check_arguments(args: argparse.Namespace) -> None:
    """What can be checked before torch is imported and photos are decoded: a run that would fail
    or destroy something fails here, in one line, instead of minutes later."""
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--output-dir = '{out}' is a file: expected a folder for the run")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        held = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise TrainError(f"--output-dir = '{out}' already holds files ({held}): expected a new or empty folder, "
                         f"or --overwrite to replace the run in it")
    if args.cv == 1 or args.cv < 0:
        raise TrainError(f"--cv = {args.cv}: expected 0 (one validation split) or at least 2 folds")
    if args.cv and args.views < 1:
        raise TrainError(f"--views = {args.views}: expected at least 1 augmented view per photo")
    weights = args.weights
    if weights not in (None, "none", "imagenet") and not Path(weights).expanduser().is_file():
        raise TrainError(f"--weights = '{weights}' is not a file: expected a torchvision state_dict of the ImageNet "
                         f"{args.backbone} (.pth), 'imagenet' (downloaded by torchvision) or 'none' (random start)")
