"""The original project's way of sorting, kept here as the yardstick.

One photo at a time: Pillow decodes the full frame, torchvision's Resize(256) / CenterCrop(224)
/ ToTensor / Normalize make the tensor, PyTorch runs the network eagerly in fp32, and the file
is moved with shutil.move. Same backbone as the nordlys model it is compared with.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

from bench.machine import cpu_seconds, usable_cpus

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABELS = ("other", "aurora")


def eager_model(backbone: str, weights: Path | None, *, seed: int = 0):  # -> torch.nn.Module
    """The torchvision network with the two-class head nordlys trains (random head is fine for speed)."""
    import torch

    from nordlys.train.models import build_model

    torch.manual_seed(seed)
    return build_model(backbone, num_classes=len(LABELS), weights=str(weights) if weights else None).eval()


def fastest_threads(model, *, batch: int = 1) -> int:  # model: torch.nn.Module
    """Set and return torch's faster thread count here and now: 1 or one per core.

    On a busy small box, torch's OpenMP threads wait for each other at every layer and one
    thread can be 50x faster than two; on an idle one, two are faster. The baseline gets
    whichever is faster, so no ratio flatters nordlys because of a bad torch setting.
    """
    import torch

    timings = {}
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        for threads in sorted({1, usable_cpus()}):
            torch.set_num_threads(threads)
            model(x)  # warm-up at this setting
            started = time.perf_counter()
            for _ in range(3):
                model(x)
            timings[threads] = time.perf_counter() - started
    best = min(timings, key=lambda t: timings[t])
    torch.set_num_threads(best)
    return best


def sort_like_the_original(photos: Sequence[Path], dest: Path, *, backbone: str, weights: Path | None) -> dict:
    """Sort `photos` into dest/aurora and dest/other; returns images/s over the sorting loop."""
    import torch
    from PIL import Image
    from torchvision import transforms

    model = eager_model(backbone, weights)
    threads = fastest_threads(model)
    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for label in LABELS:
        (dest / label).mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), cpu_seconds()
    with torch.inference_mode():
        for path in photos:
            image = Image.open(path).convert("RGB")
            logits = model(transform(image).unsqueeze(0))
            score = float(torch.softmax(logits, dim=1)[0, 1])
            shutil.move(path, dest / LABELS[int(score >= 0.5)] / path.name)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"images": len(photos), "seconds": seconds, "images_per_s": len(photos) / seconds,
            "cpu_ms_per_image": 1000 * cpu / len(photos), "torch_threads": threads}
