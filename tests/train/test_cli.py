"""The verbs' parsers build without torch: the `nordlys` command builds them all on every run."""

from __future__ import annotations

import argparse
import sys

import pytest


def test_parsers_build_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "torch" or n.startswith(("torch.", "torchvision", "nordlys.train", "nordlys.export"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    from nordlys.export import cli as export_cli, eval_cli
    from nordlys.train import cli as train_cli

    for module, argv in ((train_cli, ["--data", "d", "--output-dir", "o"]), (export_cli, ["run", "--out", "m.onnx"]),
                         (eval_cli, ["--model", "m.onnx", "--data", "d", "--report", "r"])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert parser.parse_args(argv)
    args = argparse.ArgumentParser()
    train_cli.add_arguments(args)
    parsed = args.parse_args(["--manifest", "m.csv", "--output-dir", "o", "--backbone", "mobilenet_v2", "--weights", "none"])
    assert (parsed.backbone, parsed.weights, parsed.mode, parsed.input_size) == ("mobilenet_v2", "none", "finetune", 224)
    with pytest.raises(SystemExit):
        args.parse_args(["--manifest", "m.csv", "--output-dir", "o", "--backbone", "vgg"])
