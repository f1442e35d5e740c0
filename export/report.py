"""Write an evaluation to a report folder: metrics.json, report.html and thumbs/.

report.html shows every misfiled photo (aurora called other, other called aurora) as a thumbnail
with its score, linked to the photo itself, because the numbers say how often a model fails and
the pictures say why. The charts are inline SVG (svgplot.py), so the page needs nothing beyond
the daemon's own install and stays readable at any width. Thumbnails are written beside the page,
so the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import structlog

from nordlys.daemon.loader import ImageLoadError, open_image
from nordlys.export.evaluate import Evaluation
from nordlys.export.svgplot import COLOURS, Chart, Series, render
from nordlys.train import metrics

log = structlog.get_logger(__name__)
THUMB_SIDE = 200  # pixels, longer side of a thumbnail


def write_report(ev: Evaluation, report_dir: Path) -> Path:
    """Everything into `report_dir`; returns the path of report.html."""
    report_dir.mkdir(parents=True, exist_ok=True)
    body = {"model": ev.model, **ev.summary, "unreadable_files": [{"path": p, "reason": r} for p, r in ev.unreadable],
            "seen_in_training": ev.seen_in_training}
    (report_dir / "metrics.json").write_text(json.dumps(body, indent=2) + "\n")
    page = report_dir / "report.html"
    page.write_text(render_html(ev, thumbnails(ev, report_dir / "thumbs")), encoding="utf-8")
    log.info("report_written", report=str(page), misfiled=int(ev.summary["fp"] + ev.summary["fn"]))
    return page


def confusion_table(summary: dict) -> str:
    """The confusion matrix as a table: numbers a reader can select and a screen reader can read."""
    cells = {"tn": "right", "fp": "wrong", "fn": "wrong", "tp": "right"}

    def td(key: str) -> str:
        return f'<td class="{cells[key]}">{summary[key]}</td>'

    return (f'<table class="confusion"><caption>at threshold {summary["threshold"]:.4g}</caption>'
            '<tr><td></td><th colspan="2">predicted</th></tr>'
            '<tr><th>true</th><th>other</th><th>aurora</th></tr>'
            f'<tr><th>other</th>{td("tn")}{td("fp")}</tr><tr><th>aurora</th>{td("fn")}{td("tp")}</tr></table>')


def roc_chart(ev: Evaluation) -> str:
    fpr, tpr = metrics.roc_curve(ev.targets, ev.scores)
    auc = ev.summary.get("roc_auc")
    chart = Chart("ROC", "false-positive rate", "aurora recall", series=[
        Series(list(map(float, fpr)), list(map(float, tpr)), f"AUC {auc:.4f}" if auc is not None else "ROC",
               COLOURS["aurora"]),
        Series([0.0, 1.0], [0.0, 1.0], "chance", COLOURS["grey"], dash="3 3")],
        points=[(ev.summary["fpr"] or 0.0, ev.summary["recall"] or 0.0, "threshold", COLOURS["threshold"])])
    return render(chart, description="ROC curve: aurora recall against false-positive rate")


def score_chart(ev: Evaluation) -> str:
    edges = np.linspace(0.0, 1.0, 41)
    series, peak = [], 1
    for target, name in ((0, "other"), (1, "aurora")):
        counts, _ = np.histogram(ev.scores[ev.targets == target], bins=edges)
        peak = max(peak, int(counts.max(initial=0)))
        xs = [float(x) for x in edges]
        series.append(Series(xs, [float(c) for c in counts] + [float(counts[-1])], name, COLOURS[name], step=True))
    chart = Chart("Scores", "aurora score", "photos (log scale)", y_max=float(peak), log_y=True, series=series,
                  vlines=[(ev.threshold, "threshold", COLOURS["threshold"])])
    return render(chart, description="histograms of the aurora score for aurora and other photos")


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


PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.charts{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
svg.chart{width:100%;max-width:440px;height:auto}
table.confusion td{font-size:1.4em;min-width:4em;text-align:center}
td.right{background:#e3f1e6}
td.wrong{background:#f8dede}
.warning{border:2px solid #d62728;background:#fdecea;padding:.8em 1em}
.note{color:#555}
.photos{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:18px}
.photos figure{margin:0}
.photos img{display:block;width:200px;height:200px;object-fit:contain;background:#eee}
.photos figcaption{font-size:13px;line-height:1.35;overflow-wrap:anywhere;margin-top:4px}
"""


def overlap_warning(ev: Evaluation) -> str:
    """A photo the model learnt from (or chose its threshold on) flatters every figure on the page."""
    if ev.seen_in_training is None:
        return ('<p class="note">This model does not list the photos it was trained on '
                '(metadata nordlys.training_files), so overlap with them cannot be checked.</p>')
    if not ev.seen_in_training:
        return '<p class="note">None of these photos was in the model\'s training or validation split.</p>'
    parts = [f"{len(paths)} in its {html.escape(side)} split" for side, paths in sorted(ev.seen_in_training.items())]
    listed = "".join(f"<li>{html.escape(p)}</li>" for paths in ev.seen_in_training.values() for p in paths)
    return (f'<div class="warning" role="alert"><strong>Warning: of these {len(ev.samples)} photos, '
            f'{", ".join(parts)}.</strong> The model has seen them, so the figures below flatter it; '
            f'evaluate on photos it has not seen.<details><summary>which photos</summary><ul>{listed}</ul>'
            f'</details></div>')


def photo_cards(misfiled: list[tuple[str, str, float, str]], true_label: str) -> str:
    """Thumbnails linking to the photo itself; the caption wraps inside its own column."""
    esc, cards = html.escape, []
    for label, thumb, score, path in misfiled:
        if label != true_label:
            continue
        href = esc(Path(path).absolute().as_uri())
        picture = f'<img src="{esc(thumb)}" alt="{esc(Path(path).name)}" loading="lazy">' if thumb else "(no thumbnail)"
        cards.append(f'<figure><a href="{href}">{picture}</a><figcaption>true {esc(label)}, score {score:.3f}<br>'
                     f'<a href="{href}">{esc(Path(path).name)}</a></figcaption></figure>')
    return f'<div class="photos">{"".join(cards)}</div>'


def render_html(ev: Evaluation, misfiled: list[tuple[str, str, float, str]]) -> str:
    s, esc = ev.summary, html.escape
    keys = ("count", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "fpr", "roc_auc")
    overall = "".join(f"<tr><th>{k}</th><td>{_fmt(s.get(k))}</td></tr>" for k in keys)
    kinds = "".join(f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in ("count", "recall", "fpr", "accuracy")) + "</tr>"
                    for k, m in s.get("per_kind", {}).items())
    sweep = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in ("threshold", "recall", "fpr", "balanced_accuracy")) + "</tr>"
                    for r in s["sweep"])
    missed, alarms = (sum(1 for m in misfiled if m[0] == lab) for lab in ("aurora", "other"))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>nordlys eval</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{PAGE_CSS}</style></head><body>
<h1>nordlys evaluation</h1><p>model {esc(ev.model)}; {len(ev.samples)} photos; threshold {ev.threshold:.4g};
{len(ev.unreadable)} unreadable</p>
{overlap_warning(ev)}
<div class="charts"><table>{overall}</table>{confusion_table(s)}{roc_chart(ev)}{score_chart(ev)}</div>
<h2>Per kind</h2><table><tr><th>kind</th><th>count</th><th>recall</th><th>fpr</th><th>accuracy</th></tr>{kinds}</table>
<h2>Threshold sweep</h2><table><tr><th>threshold</th><th>recall</th><th>fpr</th><th>balanced accuracy</th></tr>{sweep}</table>
<h2 id="misfiled">Misfiled photos ({len(misfiled)})</h2>
<h3>Auroras called other ({missed})</h3>{photo_cards(misfiled, "aurora")}
<h3>Others called aurora ({alarms})</h3>{photo_cards(misfiled, "other")}
</body></html>
"""
