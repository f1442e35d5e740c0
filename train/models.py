"""Backbones, their new two-class heads, and what is frozen.

Two modes:
- `head`: the backbone is frozen, only the new classifier learns (the original nordlys recipe);
- `finetune`: the last `unfreeze` stages learn too.
BatchNorm statistics are always frozen (BN layers kept in eval mode): batches here are small and
class-skewed, and the offline MobileNetV2 weights carry rebuilt BN statistics that must not drift.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import structlog
import torch
import torchvision
from torch import nn

from nordlys.train.options import BACKBONES, MODES, TrainError  # one list, shared with the CLI

log = structlog.get_logger(__name__)


def build_model(backbone: str, *, num_classes: int, weights: str | None) -> nn.Module:
    """`weights`: "imagenet" (torchvision download), a path to a torchvision state_dict of the
    ImageNet model, or None/"none" for random initialisation (tests)."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone = {backbone!r}: expected one of {list(BACKBONES)}")
    model = _torchvision_model(backbone, imagenet=(weights == "imagenet"))
    if weights not in (None, "none", "imagenet"):
        try:
            model.load_state_dict(torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainError(f"--weights = '{weights}': cannot load it into {backbone} ({first}): expected a "
                             f"torchvision state_dict of the ImageNet {backbone}") from None
        log.info("weights_loaded", backbone=backbone, path=str(weights))
    _replace_head(model, backbone, num_classes)
    return model


def _torchvision_model(backbone: str, *, imagenet: bool) -> nn.Module:
    try:
        return _build_torchvision(backbone, imagenet=imagenet)
    except (URLError, OSError) as exc:  # torchvision downloads the ImageNet weights on first use
        if not imagenet:
            raise
        reason = getattr(exc, "reason", None) or exc
        raise TrainError(f"cannot download the ImageNet weights of {backbone} ({reason}): offline, pass --weights "
                         f"PATH (a torchvision state_dict of the ImageNet {backbone}, from a connected machine's "
                         f"$TORCH_HOME/hub/checkpoints) or --weights none (random start)") from None


def _build_torchvision(backbone: str, *, imagenet: bool) -> nn.Module:
    if backbone == "resnet50":
        w = torchvision.models.ResNet50_Weights.IMAGENET1K_V2 if imagenet else None
        return torchvision.models.resnet50(weights=w)
    w2 = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2 if imagenet else None
    return torchvision.models.mobilenet_v2(weights=w2)


def _replace_head(model: nn.Module, backbone: str, num_classes: int) -> None:
    if backbone == "resnet50":
        model.fc = nn.Linear(model.fc.in_features, num_classes)  # type: ignore[assignment,arg-type]
    else:
        last = model.classifier[-1]  # type: ignore[index]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)  # type: ignore[index]


def stages(model: nn.Module, backbone: str) -> list[nn.Module]:
    """The backbone's stages, input to output, that `unfreeze` counts from the end."""
    if backbone == "resnet50":
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)  # type: ignore[arg-type]
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4]  # type: ignore[list-item]
    return list(model.features)  # type: ignore[arg-type]


def split(model: nn.Module, backbone: str, *, at: int) -> tuple[nn.Module, nn.Module]:
    """(prefix, suffix) sharing the model's own modules: prefix = stages[:at], suffix = the rest,
    pooling and head, so that suffix(prefix(x)) == model(x). Cross-validation runs the frozen
    prefix once per photo and view and trains only the suffix, which is what makes 5 folds
    affordable on a CPU; the suffix's weights are the model's, so the model is what was trained."""
    all_stages = stages(model, backbone)
    if not 0 <= at <= len(all_stages):
        raise ValueError(f"at = {at}: expected 0..{len(all_stages)} stages of {backbone}")
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return nn.Sequential(*all_stages[:at]), nn.Sequential(*all_stages[at:], pool, head(model, backbone))


def head(model: nn.Module, backbone: str) -> nn.Module:
    return model.fc if backbone == "resnet50" else model.classifier  # type: ignore[return-value]


def set_trainable(model: nn.Module, backbone: str, *, mode: str, unfreeze: int) -> list[nn.Parameter]:
    """Freeze all, then thaw the head and (finetune) the last `unfreeze` stages; returns what learns."""
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}: expected one of {list(MODES)}")
    for p in model.parameters():
        p.requires_grad = False
    thawed = [head(model, backbone)]
    if mode == "finetune":
        all_stages = stages(model, backbone)
        if not 1 <= unfreeze <= len(all_stages):
            raise ValueError(f"unfreeze = {unfreeze}: expected 1..{len(all_stages)} stages of {backbone}")
        thawed += all_stages[-unfreeze:]
    for module in thawed:
        for p in module.parameters():
            p.requires_grad = True
    params = [p for p in model.parameters() if p.requires_grad]
    log.info("trainable", backbone=backbone, mode=mode, unfreeze=unfreeze if mode == "finetune" else 0,
             parameters=sum(p.numel() for p in params))
    return params


def train_mode(model: nn.Module) -> None:
    """model.train() with every BatchNorm back in eval mode: running statistics stay frozen."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
