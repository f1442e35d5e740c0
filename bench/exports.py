"""fp32 and int8 ONNX files for each benchmarked backbone, made with nordlys's own export code.

The networks are the ones `nordlys train` builds (torchvision backbone, two-class head);
MobileNetV2 gets the offline ImageNet weights, ResNet50 random ones (its ImageNet weights are
not available offline; speed does not depend on the values). The int8 file is quantised as
`nordlys export --int8` does (static QDQ, per-channel), calibrated on a few shared photos. The
accuracy gate is not applied to these files: their heads are untrained, so accuracy means
nothing; the bundled model's gate result is read from its own metadata instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.baseline import IMAGENET_MEAN, IMAGENET_STD, LABELS, eager_model
from bench.photos import pick_sources

INPUT_SIZE = 224  # pixels per side, as the bundled model
CALIBRATION = 16  # shared photos used to calibrate the int8 activation ranges


def model_files(backbone: str, cache: Path, *, weights: Path | None, data_dir: Path) -> dict[str, Path]:
    """{"fp32": path, "int8": path}, exported once and cached."""
    fp32, int8 = cache / f"{backbone}-fp32.onnx", cache / f"{backbone}-int8.onnx"
    if not fp32.exists():
        _export(backbone, fp32, weights=weights)
    if not int8.exists():
        _quantize(backbone, fp32, int8, data_dir=data_dir)
    return {"fp32": fp32, "int8": int8}


def _meta(backbone: str, precision: str):  # -> ModelMeta
    from nordlys.daemon.contract import ModelMeta

    return ModelMeta(labels=LABELS, input_size=INPUT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=0.5,
                     version=f"bench-{backbone}-{precision}", resize="squash", backbone=backbone)


def _export(backbone: str, out: Path, *, weights: Path | None) -> None:
    from nordlys.export.onnx_export import export_fp32, write_metadata

    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    export_fp32(eager_model(backbone, weights), tmp, input_size=INPUT_SIZE)
    write_metadata(tmp, _meta(backbone, "fp32"))
    tmp.replace(out)


def _quantize(backbone: str, fp32: Path, out: Path, *, data_dir: Path, label: str = "int8", **variant) -> None:
    """int8 as `nordlys export --int8` makes it; `variant`: quantize_int8's overrides/keep_float."""
    from nordlys.export.onnx_export import write_metadata
    from nordlys.export.quantize import quantize_int8
    from nordlys.train.data import Sample

    samples = [Sample(s.path, LABELS.index(s.label), group=s.path.name)
               for s in pick_sources(data_dir, CALIBRATION)]
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    quantize_int8(fp32, tmp, samples, **variant)
    write_metadata(tmp, _meta(backbone, label))
    tmp.replace(out)


def quantized_variant(backbone: str, fp32: Path, out: Path, *, data_dir: Path, **variant) -> Path:
    """An int8 file quantised with other settings than the shipped ones, made once and cached."""
    if not out.exists():
        _quantize(backbone, fp32, out, data_dir=data_dir, label=out.stem.removeprefix(f"{backbone}-"), **variant)
    return out


def bundled_int8_gate(model: Path) -> dict:
    """The bundled model's own validation accuracy, fp32 and int8, as export measured and stored it."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    metrics = json.loads(props.get("nordlys.metrics", "{}"))
    fp32 = metrics.get("val_fp32", {}).get("accuracy")
    int8 = metrics.get("val_int8", {}).get("accuracy")
    loss = None if fp32 is None or int8 is None else round(100 * (fp32 - int8), 3)
    return {"model": props.get("nordlys.version"), "val_accuracy_fp32": fp32, "val_accuracy_int8": int8,
            "loss_points": loss, "photos": metrics.get("val_int8", {}).get("count"),
            "validation": metrics.get("validation", "validation split")}
