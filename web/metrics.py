"""`/metrics` in Prometheus text format, read from the journal and the inboxes at each scrape.

A collector, not counters kept in this process: the web app may start long after the daemon
filed the photos, and the journal is where the truth is.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from nordlys.daemon.config import Config
from nordlys.daemon.journal import DONE, FAILED, Journal
from nordlys.daemon.placement import REJECTED
from nordlys.daemon.status import waiting_in

LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)  # seconds
LATENCY_SAMPLE = 2000  # newest filings measured per scrape


class JournalCollector(Collector):
    def __init__(self, config: Config, open_journal: Callable[[], Journal], model_version: Callable[[], str]) -> None:
        self.config, self.open_journal, self.model_version = config, open_journal, model_version

    def collect(self) -> Iterator[object]:
        with self.open_journal() as journal:
            counts = journal.counts()
            failed = journal.counts(status=FAILED)
            recent = journal.recent(LATENCY_SAMPLE)
            waiting = waiting_in(self.config, kept=journal.kept_unchanged)
        filed = CounterMetricFamily("nordlys_photos_filed", "files filed per folder (journal: done)", labels=["folder"])
        for folder, n in sorted(counts.items()):
            filed.add_metric([folder], n)
        yield filed
        yield CounterMetricFamily("nordlys_rejections", "files that could not be read as photos (rejected/)",
                                  value=counts.get(REJECTED, 0))
        yield CounterMetricFamily("nordlys_errors", "moves that failed or were rolled back (journal: failed)",
                                  value=sum(failed.values()))
        backlog = GaugeMetricFamily("nordlys_inbox_backlog", "files waiting in each inbox", labels=["inbox"])
        for inbox in waiting:
            backlog.add_metric([str(inbox.path)], inbox.files)
        yield backlog
        version = GaugeMetricFamily("nordlys_model_info", "the live model (value 1)", labels=["version"])
        version.add_metric([self.model_version()], 1)
        yield version
        yield self._latency([e for e in recent if e.status == DONE])

    @staticmethod
    def _latency(entries: list) -> HistogramMetricFamily:
        """Close→moved: from the photo's mtime (its writer's last write, kept by the move) to the
        journal's entry, for the newest filings whose photo is still where it was filed."""
        seconds = []
        for e in entries:
            try:
                mtime = Path(e.dest).stat().st_mtime
            except OSError:
                continue
            seconds.append(max(0.0, datetime.fromisoformat(e.time).timestamp() - mtime))
        buckets = [(str(b), sum(s <= b for s in seconds)) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", len(seconds)))
        histogram = HistogramMetricFamily("nordlys_close_to_moved_seconds",
                                          "seconds from a photo's last write to its filing (newest filings)")
        histogram.add_metric([], buckets, sum_value=sum(seconds))
        return histogram
