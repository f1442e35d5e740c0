"""`python -m bench.int8_variants`: how fast MobileNetV2 runs in int8 when quantised other ways.

Backs the claim in docs/PERFORMANCE.md that onnxruntime's int8 MobileNetV2 stays near 2x its
fp32 speed on this kind of CPU whatever the quantisation settings, while the dense ResNet50
gets ~3x: each variant is made by nordlys's own `quantize_int8` (the shipped SETTINGS with one
thing changed) from the benchmark's fp32 file, and all of them run in one process, taking turns
(bench.models.onnx_throughput), batch 8 and 1. Speed only; the head is untrained, so accuracy
means nothing here (the bundled model's accuracy gate is in the main benchmark).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _convs(model) -> list:  # onnx.ModelProto -> its Conv nodes, in graph order
    return [n for n in model.graph.node if n.op_type == "Conv"]


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def stem(model) -> list[str]:
    """The first convolution (3 input channels: int8 kernels gain least there)."""
    return [_convs(model)[0].name]


def stem_and_first_depthwise(model) -> list[str]:
    first_dw = next(n.name for n in _convs(model) if _group(n) > 1)
    return [*stem(model), first_dw]


def all_depthwise(model) -> list[str]:
    return [n.name for n in _convs(model) if _group(n) > 1]


def variants() -> dict[str, dict]:
    """name -> quantize_int8 keyword arguments (one change each from the shipped settings)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    return {
        "shipped (QDQ, per-channel, U8S8)": {},
        "per-tensor weights": {"overrides": {"per_channel": False}},
        "QOperator format": {"overrides": {"quant_format": QuantFormat.QOperator}},
        "S8S8 (signed activations)": {"overrides": {"activation_type": QuantType.QInt8}},
        "U8U8 (unsigned weights)": {"overrides": {"weight_type": QuantType.QUInt8}},
        "stem conv left in fp32": {"keep_float": stem},
        "stem + first depthwise in fp32": {"keep_float": stem_and_first_depthwise},
        "every depthwise conv in fp32": {"keep_float": all_depthwise},
    }


def run(*, cache: Path, data: Path, weights: Path, seconds: float, batches: Sequence[int]) -> dict:
    from bench.exports import model_files, quantized_variant
    from bench.isolate import isolated
    from bench.models import onnx_throughput

    files = isolated(model_files, "mobilenet_v2", cache, weights=weights, data_dir=data)
    paths = {"fp32": files["fp32"]}
    for name, kwargs in variants().items():
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        paths[name] = files["int8"] if not kwargs else isolated(
            quantized_variant, "mobilenet_v2", files["fp32"], cache / f"mobilenet_v2-int8-{slug}.onnx",
            data_dir=data, **kwargs)
    rates = isolated(onnx_throughput, paths, batches=batches, seconds=seconds)
    return {name: {f"b{b}": rates[name][f"b{b}"] for b in batches} |
            {f"vs_fp32_b{b}": rates[name][f"b{b}"] / rates["fp32"][f"b{b}"] for b in batches}
            for name in paths}


def render(result: dict, batches: Sequence[int]) -> str:
    head = "| MobileNetV2, onnxruntime | " + " | ".join(f"batch {b}: images/s (x fp32)" for b in batches) + " |"
    lines = [head, "|---|" + "---|" * len(batches)]
    for name, r in result.items():
        cells = [f"{r[f'b{b}']:.0f} ({r[f'vs_fp32_b{b}']:.2f}x)" for b in batches]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.int8_variants", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of running per variant and batch size")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 1])
    p.add_argument("--cache", type=Path, default=REPO / "bench" / ".cache" / "models")
    p.add_argument("--data", type=Path, default=SHARED / "data")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2_from_onnx_int8_dequant.pth")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    result = run(cache=args.cache, data=args.data, weights=args.weights, seconds=args.seconds, batches=args.batches)
    print(render(result, args.batches))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
