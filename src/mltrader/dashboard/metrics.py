"""Prometheus metrics of the dashboard's journal: a collector read at each scrape.

The gauges (``mltrader_`` prefix): equity, cash, exposure, open orders, rejections, guard
trips, last bar lag, whether the journal is reachable and how many browsers follow the live
stream. Each app has its own registry (several apps in one process never collide).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

GAUGES = {
    "equity": "Account equity at the last snapshot",
    "cash": "Cash at the last snapshot",
    "exposure": "Invested share of equity at the last snapshot ((equity - cash) / equity)",
    "open_orders": "Orders not in a final status",
    "rejections": "Orders the broker rejected (run total)",
    "guard_trips": "Risk guards that tripped (audit events, journal total)",
    "last_bar_lag_seconds": "Seconds since the last completed bar",
    "journal_up": "1 when the journal could be read at this scrape",
    "stream_clients": "Browsers connected to the live stream",
}


class JournalCollector(Collector):
    """Yields the gauges from ``read()`` (a dict of the names above; missing: not shown)."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self._read()
        for name, doc in GAUGES.items():
            v = values.get(name)
            if v is None:
                continue
            g = GaugeMetricFamily(f"mltrader_{name}", doc)
            g.add_metric([], float(v))
            yield g


def registry_for(read: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(JournalCollector(read))
    return reg


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
