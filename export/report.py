"""Write an evaluation to a report folder: metrics.json, PNG plots and report.html.

report.html shows every misfiled photo (aurora called other, other called aurora) as a small
thumbnail with its score, because the numbers say how often a model fails and the pictures say
why. Thumbnails are written beside the page, so the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import structlog  # noqa: E402

from nordlys.daemon.loader import ImageLoadError, open_image  # noqa: E402
from nordlys.export.evaluate import Evaluation  # noqa: E402
from nordlys.train import metrics  # noqa: E402

log = structlog.get_logger(__name__)
THUMB_SIDE = 160  # pixels, longer side of a thumbnail


def write_report(ev: Evaluation, report_dir: Path) -> Path:
    """Everything into `report_dir`; returns the path of report.html."""
    report_dir.mkdir(parents=True, exist_ok=True)
    body = {"model": ev.model, **ev.summary, "unreadable_files": [{"path": p, "reason": r} for p, r in ev.unreadable]}
    (report_dir / "metrics.json").write_text(json.dumps(body, indent=2) + "\n")
    plot_confusion(ev.summary, report_dir / "confusion.png")
    plot_roc(ev, report_dir / "roc.png")
    plot_histograms(ev, report_dir / "scores.png")
    page = report_dir / "report.html"
    page.write_text(render_html(ev, thumbnails(ev, report_dir / "thumbs")), encoding="utf-8")
    log.info("report_written", report=str(page), misfiled=int(ev.summary["fp"] + ev.summary["fn"]))
    return page


def plot_confusion(summary: dict, path: Path) -> None:
    grid = np.array([[summary["tn"], summary["fp"]], [summary["fn"], summary["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(grid, cmap="Blues")
    for (i, j), n in np.ndenumerate(grid):
        ax.text(j, i, str(n), ha="center", va="center", color="black", fontsize=13)
    ax.set_xticks([0, 1], ["other", "aurora"]), ax.set_yticks([0, 1], ["other", "aurora"])
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(f"threshold {summary['threshold']:.3g}")
    fig.tight_layout(), fig.savefig(path, dpi=100), plt.close(fig)


def plot_roc(ev: Evaluation, path: Path) -> None:
    fpr, tpr = metrics.roc_curve(ev.targets, ev.scores)
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.plot(fpr, tpr, label=f"AUC {ev.summary['roc_auc'] or float('nan'):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.scatter([ev.summary["fpr"] or 0], [ev.summary["recall"] or 0], color="red", zorder=3, label="threshold")
    ax.set_xlabel("false-positive rate"), ax.set_ylabel("aurora recall"), ax.legend(loc="lower right")
    fig.tight_layout(), fig.savefig(path, dpi=100), plt.close(fig)


def plot_histograms(ev: Evaluation, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    bins = np.linspace(0, 1, 41)
    for target, name in ((0, "other"), (1, "aurora")):
        ax.hist(ev.scores[ev.targets == target], bins=bins, alpha=0.6, label=name, log=True)
    ax.axvline(ev.threshold, color="red", linestyle="--", label="threshold")
    ax.set_xlabel("aurora score"), ax.set_ylabel("photos (log)"), ax.legend()
    fig.tight_layout(), fig.savefig(path, dpi=100), plt.close(fig)


def thumbnails(ev: Evaluation, folder: Path) -> list[tuple[str, str, float, str]]:
    """(true label, thumbnail file relative to the report, score, photo path) per misfiled photo."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("[0-9][0-9][0-9][0-9][0-9].jpg"):  # this module's own names, from an earlier report
        stale.unlink()
    predicted = ev.scores >= ev.threshold
    rows = []
    for i in np.flatnonzero(predicted != ev.targets.astype(bool)):
        s = ev.samples[i]
        name = f"{i:05d}.jpg"
        try:
            image = open_image(s.path, min_side=THUMB_SIDE)
            image.thumbnail((THUMB_SIDE, THUMB_SIDE))
            image.save(folder / name, quality=80)
        except (ImageLoadError, OSError) as exc:
            log.warning("thumbnail_failed", path=str(s.path), reason=str(exc))
            name = ""
        rows.append(("aurora" if s.target else "other", f"{folder.name}/{name}" if name else "",
                     float(ev.scores[i]), str(s.path)))
    return sorted(rows, key=lambda r: (r[0], -r[2]))


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("n/a" if v is None else str(v))


def render_html(ev: Evaluation, misfiled: list[tuple[str, str, float, str]]) -> str:
    s, esc = ev.summary, html.escape
    keys = ("count", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "fpr", "roc_auc")
    overall = "".join(f"<tr><th>{k}</th><td>{_fmt(s.get(k))}</td></tr>" for k in keys)
    kinds = "".join(f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in ("count", "recall", "fpr", "accuracy")) + "</tr>"
                    for k, m in s.get("per_kind", {}).items())
    sweep = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in ("threshold", "recall", "fpr", "balanced_accuracy")) + "</tr>"
                    for r in s["sweep"])
    cards = "".join(f'<figure><img src="{esc(t)}" alt=""><figcaption>true {esc(lab)}, score {sc:.3f}<br>'
                    f'<small>{esc(Path(p).name)}</small></figcaption></figure>' for lab, t, sc, p in misfiled)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>nordlys eval</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}figure{{display:inline-block;margin:4px;width:170px;font-size:12px}}
img{{max-width:160px;max-height:160px}}</style></head><body>
<h1>nordlys evaluation</h1><p>model {esc(ev.model)}; threshold {ev.threshold:.4g}; {len(ev.unreadable)} unreadable</p>
<table>{overall}</table>
<img src="confusion.png" alt="confusion matrix"> <img src="roc.png" alt="ROC"> <img src="scores.png" alt="score histograms">
<h2>Per kind</h2><table><tr><th>kind</th><th>count</th><th>recall</th><th>fpr</th><th>accuracy</th></tr>{kinds}</table>
<h2>Threshold sweep</h2><table><tr><th>threshold</th><th>recall</th><th>fpr</th><th>balanced accuracy</th></tr>{sweep}</table>
<h2>Misfiled photos ({len(misfiled)})</h2>{cards}
</body></html>
"""
