"""The ONNX metadata contract: the only thing that passes between training and the daemon.

An exported model carries everything the daemon needs to use it correctly as ONNX
`metadata_props` (string key/value pairs), so a model file can be dropped in without any
config telling the daemon how it was trained. `nordlys.export` writes these keys with
`to_metadata`; the classifier reads them with `from_metadata`. Nothing else defines them.

Graph contract (checked by the classifier when it loads a model):
- one input, float32, shape (N, 3, input_size, input_size), RGB, values
  `(pixel / 255 - mean) / std`, N dynamic;
- one output, float32, shape (N, len(labels)): raw logits, softmaxed by the reader.

Metadata keys (all values are strings; lists and dicts are JSON):

| key                     | example                         | meaning                                        |
|-------------------------|---------------------------------|------------------------------------------------|
| nordlys.contract        | "1"                             | version of this contract                       |
| nordlys.labels          | ["other", "aurora"]             | class names in output order                    |
| nordlys.positive_label  | "aurora"                        | the class whose probability is the score       |
| nordlys.input_size      | "224"                           | square input side in pixels                    |
| nordlys.resize          | "squash"                        | how a photo becomes a square: squash, letterbox, center_crop |
| nordlys.mean            | [0.485, 0.456, 0.406]           | per-channel mean on the 0..1 scale             |
| nordlys.std             | [0.229, 0.224, 0.225]           | per-channel std on the 0..1 scale              |
| nordlys.threshold       | "0.5"                           | default decision threshold on the score        |
| nordlys.version         | "mobilenet_v2-20261125-1a2b3c"  | model version, written to the journal          |
| nordlys.backbone        | "mobilenet_v2"                  | architecture, informational                    |
| nordlys.training_data   | {"train": 1700, ...}            | optional summary of the training data          |
| nordlys.metrics         | {"val": {...}}                  | optional validation metrics                    |
| nordlys.training_files  | {"train": ["9f86d081884c7d65", ...], "val": [...]} | optional: the first 16 hex digits of each training and validation photo's sha256, so `nordlys eval` can warn when it is shown photos the model learnt from |
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

CONTRACT_VERSION = "1"
PREFIX = "nordlys."
RESIZE_MODES = ("squash", "letterbox", "center_crop")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DIGEST_HEX = 16  # hex digits of a photo's sha256 in nordlys.training_files: 64 bits, no accidental matches


def training_digest(sha256_hex: str) -> str:
    """A photo's entry in nordlys.training_files (export writes them, eval looks them up)."""
    return sha256_hex[:DIGEST_HEX]


class ModelContractError(ValueError):
    """A model file does not follow the metadata contract; the message says which key and why."""


@dataclass(frozen=True)
class ModelMeta:
    """What a model says about itself: enough to preprocess photos and read its output."""

    labels: tuple[str, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float
    version: str
    positive_label: str = "aurora"
    resize: str = "squash"
    backbone: str = "unknown"
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training_files: dict[str, list[str]] = field(default_factory=dict)  # split -> training_digest()s

    def __post_init__(self) -> None:
        _check(len(self.labels) >= 2, "labels", list(self.labels), "at least two class names")
        _check(self.positive_label in self.labels, "positive_label", self.positive_label,
               f"one of the labels {list(self.labels)}")
        _check(8 <= self.input_size <= 4096, "input_size", self.input_size, "an integer from 8 to 4096")
        _check(self.resize in RESIZE_MODES, "resize", self.resize, f"one of {list(RESIZE_MODES)}")
        _check(len(self.mean) == 3, "mean", list(self.mean), "three numbers (R, G, B)")
        _check(len(self.std) == 3 and all(s > 0 for s in self.std), "std", list(self.std),
               "three positive numbers (R, G, B)")
        _check(0.0 <= self.threshold <= 1.0 and not math.isnan(self.threshold), "threshold",
               self.threshold, "a number from 0 to 1")
        _check(bool(self.version), "version", self.version, "a non-empty string")

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ModelContractError(f"model metadata {PREFIX}{key} = {value!r}: expected {expected}")


def to_metadata(meta: ModelMeta) -> dict[str, str]:
    """The metadata_props an exported model must carry (export writes exactly these)."""
    return {
        PREFIX + "contract": CONTRACT_VERSION,
        PREFIX + "labels": json.dumps(list(meta.labels)),
        PREFIX + "positive_label": meta.positive_label,
        PREFIX + "input_size": str(meta.input_size),
        PREFIX + "resize": meta.resize,
        PREFIX + "mean": json.dumps([float(m) for m in meta.mean]),
        PREFIX + "std": json.dumps([float(s) for s in meta.std]),
        PREFIX + "threshold": repr(float(meta.threshold)),
        PREFIX + "version": meta.version,
        PREFIX + "backbone": meta.backbone,
        PREFIX + "training_data": json.dumps(meta.training_data, sort_keys=True),
        PREFIX + "metrics": json.dumps(meta.metrics, sort_keys=True),
        **({PREFIX + "training_files": json.dumps(meta.training_files, separators=(",", ":"))}
           if meta.training_files else {}),
    }


def from_metadata(props: Mapping[str, str], source: str = "model") -> ModelMeta:
    """Parse metadata_props into a ModelMeta; a missing or malformed key names itself."""

    def get(key: str, default: str | None = None) -> str:
        value = props.get(PREFIX + key, default)
        if value is None:
            raise ModelContractError(
                f"{source}: metadata key {PREFIX}{key} is missing; a nordlys model carries "
                f"{', '.join(PREFIX + k for k in REQUIRED_KEYS)} (see nordlys.daemon.contract)")
        return value

    def parse(key: str, kind: str, default: str | None = None) -> Any:
        raw = get(key, default)
        try:
            value = json.loads(raw) if kind == "json" else (int(raw) if kind == "int" else float(raw))
        except (ValueError, TypeError):
            raise ModelContractError(f"{source}: metadata {PREFIX}{key} = {raw!r} is not valid {kind}") from None
        return value

    contract = get("contract")
    if contract != CONTRACT_VERSION:
        raise ModelContractError(
            f"{source}: metadata {PREFIX}contract = {contract!r}: expected {CONTRACT_VERSION!r}")
    labels = parse("labels", "json")
    mean, std = parse("mean", "json"), parse("std", "json")
    for key, value in (("labels", labels), ("mean", mean), ("std", std)):
        if not isinstance(value, list):
            raise ModelContractError(f"{source}: metadata {PREFIX}{key} = {value!r}: expected a JSON list")
    try:
        return ModelMeta(
            labels=tuple(str(x) for x in labels),
            input_size=parse("input_size", "int"),
            mean=tuple(float(x) for x in mean),  # type: ignore[arg-type]
            std=tuple(float(x) for x in std),  # type: ignore[arg-type]
            threshold=parse("threshold", "float"),
            version=get("version"),
            positive_label=get("positive_label", "aurora"),
            resize=get("resize", "squash"),
            backbone=get("backbone", "unknown"),
            training_data=parse("training_data", "json", "{}"),
            metrics=parse("metrics", "json", "{}"),
            training_files=parse("training_files", "json", "{}"),
        )
    except ModelContractError as exc:
        raise ModelContractError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelContractError(f"{source}: malformed metadata: {exc}") from None


REQUIRED_KEYS = ("contract", "labels", "input_size", "mean", "std", "threshold", "version")
