"""`python -m bench [--quick | --full]`: run every measurement, print one table, write the JSON.

Each contender runs in its own fresh process (bench.isolate); the baseline and nordlys are
measured in the same run, alternating, and every comparison is a ratio of figures from that
run, because the machine this is meant for is small and often busy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench import machine, table
from bench.baseline import sort_like_the_original
from bench.daemon_latency import daemon_bench
from bench.endtoend import decode_limit, sort_with_nordlys
from bench.exports import bundled_int8_gate, model_files
from bench.isolate import isolated
from bench.models import eager_throughput, onnx_throughput
from bench.photos import camera_photos
from bench.staging import stage

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BUNDLED = REPO / "daemon" / "models" / "default.onnx"


@dataclass(frozen=True)
class Settings:
    mode: str  # quick or full
    frames: dict[str, int]  # frame -> photos sorted per run
    backbones: tuple[str, ...]  # same-backbone comparisons and model-only throughput
    reps: int  # alternating baseline/nordlys repetitions; medians are reported
    seconds: float  # per model-only cell
    latency_photos: int  # photos written one by one to the idle daemon
    burst: int  # photos written back to back to the daemon (0: no daemon figures)


def settings_from(args: argparse.Namespace) -> Settings:
    full = args.full
    images = args.images or (64 if full else 24)
    frames = {"12mp": images, "24mp": max(2, images // 2)} if full else {"12mp": images}
    return Settings(mode="full" if full else "quick", frames=frames, backbones=tuple(args.backbones),
                    reps=args.reps or (3 if full else 1), seconds=args.seconds or (4.0 if full else 1.5),
                    latency_photos=args.latency or (30 if full else 10),
                    burst=args.burst if args.burst is not None else (1000 if full else 200))


def median_run(runs: Sequence[dict]) -> dict:
    """The median run by images/s, with every repetition's rate kept beside it."""
    ordered = sorted(runs, key=lambda r: r["images_per_s"])
    return {**ordered[len(ordered) // 2], "runs_images_per_s": [round(r["images_per_s"], 2) for r in runs]}


def median_ratio(tops: Sequence[dict], bottoms: Sequence[dict]) -> tuple[float, list[float]]:
    """Ratios of runs made side by side in the same repetition, and their median: the load of a
    shared machine drifts over minutes, so only neighbours in time are compared."""
    ratios = [t["images_per_s"] / b["images_per_s"] for t, b in zip(tops, bottoms, strict=True)]
    return statistics.median(ratios), [round(r, 3) for r in ratios]


def end_to_end(photos: list[Path], backbone: str, nordlys_model: Path, weights: Path | None, work: Path,
               reps: int, *, with_limit: bool) -> dict:
    """Baseline, nordlys and (with_limit) the decode-only limit, one after the other, `reps` times."""
    base, ours, limits = [], [], []
    for rep in range(reps):
        base.append(isolated(sort_like_the_original, stage(photos, work / "in"), work / f"base{rep}",
                             backbone=backbone, weights=weights))
        stage(photos, work / "in")
        ours.append(isolated(sort_with_nordlys, work / "in", work / f"ours{rep}", work / f"journal{rep}.sqlite",
                             model=nordlys_model))
        if with_limit:
            limits.append(isolated(decode_limit, photos))
        empty(work)
    ratio, ratios = median_ratio(ours, base)
    result = {"baseline": median_run(base), "nordlys": median_run(ours), "ratio": ratio, "ratios": ratios,
              "nordlys_model": str(nordlys_model.name)}
    if with_limit:
        percent, fractions = median_ratio(ours, limits)
        result["decode_limit"] = {**median_run(limits), "nordlys_images_per_s": result["nordlys"]["images_per_s"],
                                  "nordlys_cpu_ms_per_image": result["nordlys"]["cpu_ms_per_image"],
                                  "nordlys_percent": 100 * percent, "nordlys_fractions": fractions}
    return result


def empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def model_only(backbone: str, files: dict[str, Path], weights: Path | None, seconds: float) -> dict:
    eager = isolated(eager_throughput, backbone, weights, seconds=seconds)
    ort = isolated(onnx_throughput, {"ort_fp32": files["fp32"], "ort_int8": files["int8"]}, seconds=seconds)
    fp32, int8 = ort["ort_fp32"], ort["ort_int8"]
    return {"eager_fp32": eager, "ort_fp32": fp32, "ort_int8": int8,
            "int8_vs_fp32": {b: int8[b] / fp32[b] for b in int8}, "int8_vs_eager": {b: int8[b] / eager[b] for b in int8},
            "files": {k: str(v.name) for k, v in files.items()}}


def frame_figures(results: dict, s: Settings, frame: str, photos: list[Path], models: dict[str, Path],
                  weights_of: dict[str, Path | None], work: Path) -> None:
    """End-to-end for every backbone on one frame size; the limit beside the headline backbone."""
    headline = "mobilenet_v2" if "mobilenet_v2" in s.backbones else s.backbones[0]
    per_backbone = {b: end_to_end(photos, b, models[b], weights_of[b], work, s.reps, with_limit=(b == headline))
                    for b in s.backbones}
    results["decode_limit"][frame] = per_backbone[headline].pop("decode_limit")
    results["end_to_end"][frame] = per_backbone


def run(s: Settings, *, data: Path, weights: Path, cache: Path) -> dict:
    results: dict = {"machine": machine.describe(), "settings": s.__dict__, "end_to_end": {}, "decode_limit": {},
                     "model_only": {}}
    weights_of = {"mobilenet_v2": weights, "resnet50": None}  # no offline ImageNet ResNet50: random weights
    files = {b: isolated(model_files, b, cache / "models", weights=weights_of[b], data_dir=data) for b in s.backbones}
    ours = {b: (BUNDLED if b == "mobilenet_v2" else files[b]["int8"]) for b in s.backbones}
    work = Path(tempfile.mkdtemp(prefix="work-", dir=cache))  # inboxes, on the photos' file system
    started = time.monotonic()
    try:
        for frame, count in s.frames.items():
            photos = camera_photos(data, cache / "photos", frame=frame, count=count)
            frame_figures(results, s, frame, photos, ours, weights_of, work)
            print(f"bench: {frame} end-to-end done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        for b in s.backbones:
            results["model_only"][b] = model_only(b, files[b], weights_of[b], s.seconds)
        print(f"bench: model-only done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        if s.burst:
            photos = camera_photos(data, cache / "photos", frame="12mp", count=s.frames.get("12mp", 16))
            results["daemon"] = daemon_bench(photos, work / "daemon", latency_photos=s.latency_photos, burst=s.burst)
            print(f"bench: daemon done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["int8_accuracy"] = {**bundled_int8_gate(BUNDLED),
                                "note": "bench-exported models have untrained heads: no accuracy gate for them"}
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["seconds"] = time.monotonic() - started
    results["targets"] = table.targets(results)
    return results


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="24 photos of 12 MP, 1 repetition, 200-photo burst (default; < 3 min)")
    mode.add_argument("--full", action="store_true", help="64 of 12 MP and 32 of 24 MP, 3 repetitions, 1,000-photo burst")
    p.add_argument("--images", type=int, help="12 MP photos per run (24 MP: half as many)")
    p.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "resnet50"], choices=["mobilenet_v2", "resnet50"])
    p.add_argument("--reps", type=int, help="repetitions of each end-to-end comparison")
    p.add_argument("--seconds", type=float, help="seconds per model-only measurement")
    p.add_argument("--latency", type=int, help="photos for the daemon's close -> moved latency")
    p.add_argument("--burst", type=int, help="photos in the daemon burst (0: skip the daemon)")
    p.add_argument("--json", type=Path, help="where to write the figures (default: bench/.cache/bench-MODE.json)")
    p.add_argument("--cache", type=Path, default=REPO / "bench" / ".cache", help="generated photos and models")
    p.add_argument("--data", type=Path, default=SHARED / "data", help="the shared photo set")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2_from_onnx_int8_dequant.pth")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    s = settings_from(args)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = run(s, data=args.data, weights=args.weights, cache=args.cache)
    out = args.json or args.cache / f"bench-{s.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table.render(results))
    print(f"\nfigures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
