"""The endpoint service families (v2): a few per project, so a plain collector built at
scrape time, as client_python's collectors are."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.atlas import ServiceKey
from monitor.free_text import LABEL_TEXT_MAX_CHARS, label_text
from monitor.polling.state import ServiceState
from monitor.providers import SERVICE_STATUSES

ServiceSnapshot = Sequence[tuple[ServiceKey, ServiceState | None]]
"""Every watched endpoint service (v2) with its state, or None before its first poll."""


class ServiceCollector(Collector):
    """Endpoint services (v2): a few per project, so plain families built at scrape time."""

    def __init__(self, snapshot: Callable[[], ServiceSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        status, up, error, error_message, info = families = self._families()
        for key, state in self._snapshot():
            ids = [key.group_id, key.service_id, key.cloud_provider.value]
            info.add_metric([*ids, (state.region if state else None) or ""], 1)
            up.add_metric(ids, state is not None and state.up)
            if state is None or state.status is None:
                continue
            error.add_metric(ids, state.error_message is not None)
            if state.error_message is not None:
                error_message.add_metric([*ids, label_text(state.error_message)], 1)
            for known in SERVICE_STATUSES[key.cloud_provider]:
                status.add_metric([*ids, known.value], known is state.status)
        return iter(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        ids = ["group_id", "private_link_id", "cloud_provider"]
        return (
            GaugeMetricFamily(
                "atlas_endpoint_service_status",
                "Endpoint service status as a state set: 1 for the current status, 0 for the "
                "others.",
                labels=[*ids, "status"],
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_up",
                "1 if the last poll of the endpoint service got a valid answer.",
                labels=ids,
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_error",
                "1 if Atlas reports an errorMessage for the endpoint service.",
                labels=ids,
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_error_message_info",
                "Atlas' errorMessage for the endpoint service, on one line of at most "
                f"{LABEL_TEXT_MAX_CHARS} characters, while there is one; always 1.",
                labels=[*ids, "error_message"],
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_info",
                "Region of each watched endpoint service; always 1.",
                labels=[*ids, "region"],
            ),
        )
