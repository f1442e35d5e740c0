"""One table from the results dict: what `python -m bench` prints and PERFORMANCE.md quotes."""

from __future__ import annotations

from typing import Any

TARGETS = {  # key -> (description, comparison, limit); int8_vs_fp32 is checked per backbone
    "e2e_ratio_12mp": ("end-to-end vs original-style baseline, 12 MP, mobilenet_v2 both", ">=", 6.0),
    "percent_of_decode_limit_12mp": ("nordlys end-to-end, % of the decode-bound limit, 12 MP", ">=", 80.0),
    "int8_vs_fp32": ("onnxruntime int8 / fp32 model throughput, batch 8", ">=", 2.5),
    "int8_accuracy_loss_points": ("int8 accuracy loss (bundled model, validation), points", "<=", 0.5),
    "latency_p95_s": ("daemon close -> moved, p95, seconds", "<=", 0.5),
    "daemon_peak_rss_mb": ("daemon peak RSS with the default model, MB", "<=", 250.0),
}


def check(value: float | None, comparison: str, limit: float) -> bool | None:
    if value is None:
        return None
    return value >= limit if comparison == ">=" else value <= limit


def targets(results: dict[str, Any]) -> dict[str, dict]:
    """The issue's targets against this run's figures (the headline backbone: mobilenet_v2);
    the int8 target once per benchmarked backbone."""
    e2e = results.get("end_to_end", {}).get("12mp", {})
    headline = e2e.get("mobilenet_v2") or next(iter(e2e.values()), {})
    limit = results.get("decode_limit", {}).get("12mp", {})
    daemon = results.get("daemon", {})
    values: dict[str, float | None] = {
        "e2e_ratio_12mp": headline.get("ratio"),
        "percent_of_decode_limit_12mp": limit.get("nordlys_percent"),
        "int8_accuracy_loss_points": results.get("int8_accuracy", {}).get("loss_points"),
        "latency_p95_s": daemon.get("latency_s", {}).get("p95"),
        "daemon_peak_rss_mb": daemon.get("rss_mb", {}).get("peak"),
    }
    found = {}
    for key, (what, op, bound) in TARGETS.items():
        if key == "int8_vs_fp32":
            for backbone, m in results.get("model_only", {}).items():
                found[f"{key}_{backbone}"] = _target(f"{what}, {backbone}", m["int8_vs_fp32"]["b8"], op, bound)
        else:
            found[key] = _target(what, values[key], op, bound)
    return found


def _target(what: str, value: float | None, op: str, bound: float) -> dict:
    return {"what": what, "value": value, "target": f"{op} {bound}", "met": check(value, op, bound)}


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _range(values: list[float], unit: str = "x") -> str:
    """min-max of the side-by-side repetitions: how much the machine's load moved the figure."""
    return f"{min(values):.1f}-{max(values):.1f}{unit}" if len(values) > 1 else "1 run"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"nordlys bench ({results['settings']['mode']}) on {m['nproc']} x {m['cpu_model']}, "
             f"load average at start {m['loadavg'][0]:.2f}; ratios are medians of side-by-side repetitions", "",
             "| measurement | nordlys | baseline / reference | ratio | CPU ms per photo: nordlys / reference |",
             "|---|---|---|---|---|"]
    for frame, per_backbone in results.get("end_to_end", {}).items():
        for backbone, r in per_backbone.items():
            n, b = r["nordlys"], r["baseline"]
            lines.append(f"| end-to-end sort, {frame}, {backbone} (images/s) | {_f(n['images_per_s'])} "
                         f"| {_f(b['images_per_s'])} (PIL full decode + torch eager, 1 at a time) "
                         f"| {_f(r['ratio'])}x ({_range(r['ratios'])}) | {_f(n['cpu_ms_per_image'])} / {_f(b['cpu_ms_per_image'])} |")
    for frame, r in results.get("decode_limit", {}).items():
        lines.append(f"| decode-bound limit, {frame} (reduced-DCT decode alone, {r['threads']} threads, images/s) "
                     f"| {_f(r['nordlys_images_per_s'])} | {_f(r['images_per_s'])} "
                     f"| {_f(r['nordlys_percent'])}% ({_range([100 * x for x in r['nordlys_fractions']], '%')}) "
                     f"| {_f(r['nordlys_cpu_ms_per_image'])} / {_f(r['cpu_ms_per_image'])} |")
    for backbone, r in results.get("model_only", {}).items():
        for batch in ("b1", "b8"):
            lines.append(f"| model only, {backbone}, batch {batch[1:]} (images/s): eager fp32 / ort fp32 / ort int8 "
                         f"| {_f(r['ort_int8'][batch])} (int8) | {_f(r['eager_fp32'][batch])} / "
                         f"{_f(r['ort_fp32'][batch])} | int8/fp32 {_f(r['int8_vs_fp32'][batch], 2)}x, "
                         f"int8/eager {_f(r['int8_vs_eager'][batch], 2)}x | |")
    d = results.get("daemon")
    if d:
        lat, burst = d["latency_s"], d["burst"]
        lines += [f"| daemon close -> moved, idle, median / p95 (s, {lat['photos']} photos) | {_f(lat['median'], 3)} / "
                  f"{_f(lat['p95'], 3)} | | | |",
                  f"| daemon burst of {burst['photos']} photos (images/s) | {_f(burst['images_per_s'])} | | | "
                  f"{_f(burst.get('daemon_cpu_ms_per_image'))} (daemon) |",
                  f"| daemon RSS, idle / peak (MB) | {_f(d['rss_mb']['idle'])} / {_f(d['rss_mb']['peak'])} | | | |"]
    acc = results.get("int8_accuracy", {})
    if acc.get("loss_points") is not None:
        where = "out-of-fold" if "out-of-fold" in acc.get("validation", "") else "validation"
        lines.append(f"| int8 accuracy, bundled model ({acc['photos']} photos, {where}) | "
                     f"{100 * acc['val_accuracy_int8']:.2f}% | {100 * acc['val_accuracy_fp32']:.2f}% (fp32) | "
                     f"-{acc['loss_points']:.2f} points | |")
    lines += ["", "| target | value | wanted | met |", "|---|---|---|---|"]
    for t in results.get("targets", {}).values():
        met = {True: "yes", False: "NO", None: "not measured"}[t["met"]]
        lines.append(f"| {t['what']} | {_f(t['value'], 2)} | {t['target']} | {met} |")
    return "\n".join(lines)
