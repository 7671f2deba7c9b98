"""The atlas-endpoint-monitor Grafana dashboard, written with grafana-foundation-sdk.

    python grafana/dashboard.py            # print the dashboard JSON to stdout
    python grafana/dashboard.py --write    # (re)write grafana/dashboards/<uid>.json

The JSON is committed; tests/test_grafana.py fails when it differs from what this script
prints, so edit this file and regenerate rather than editing the JSON or the dashboard in the
Grafana UI (the provisioning forbids saving UI changes anyway).
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "atlas-endpoint-monitor"
TITLE = "Atlas PrivateLink endpoints"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / f"{UID}.json"
README = "https://github.com/atlas-endpoint-monitor/atlas-endpoint-monitor/blob/main/README.md"
RUNBOOK = "https://github.com/atlas-endpoint-monitor/atlas-endpoint-monitor/blob/main/docs/alerts-runbook.md"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# The labels that identify one monitor's view of one endpoint. job and instance are part of
# the join so that two monitors (or two jobs) watching the same endpoint never make a
# many-to-many match.
JOIN = "job, instance, group_id, private_link_id, interface_endpoint_id"
# The endpoints the template variables select; every per-endpoint query is restricted to them.
SELECTED = (
    'atlas_interface_endpoint_info{job=~"$job", group_id=~"$group_id", '
    'cloud_provider=~"$cloud_provider", $label=~"$label_value"}'
)
# The labels that identify one monitor's view of one endpoint service (Atlas API v2), and the
# services the variables select (endpoint services have no name or user labels).
SERVICE_JOIN = "job, instance, group_id, private_link_id, cloud_provider"
SERVICES_SELECTED = (
    'atlas_endpoint_service_info{job=~"$job", group_id=~"$group_id", '
    'cloud_provider=~"$cloud_provider"}'
)

# Endpoint status -> (number used by the state timeline, colour), for every provider (AWS
# NONE, PENDING_ACCEPTANCE, PENDING; Azure and GCP INITIATING; GCP VERIFIED and DELETED). The
# order is Atlas' lifecycle: blue/yellow on the way, green there, red failed, orange going away.
STATUSES: dict[str, tuple[int, str]] = {
    "NONE": (1, "blue"),
    "PENDING_ACCEPTANCE": (2, "yellow"),
    "PENDING": (3, "yellow"),
    "INITIATING": (4, "yellow"),
    "VERIFIED": (5, "light-yellow"),
    "AVAILABLE": (6, "green"),
    "REJECTED": (7, "red"),
    "FAILED": (8, "red"),
    "DELETING": (9, "orange"),
    "DELETED": (10, "dark-orange"),
    "UNKNOWN": (11, "purple"),
}
# Endpoint service status (Atlas API v2) -> (number, colour), as for endpoints.
SERVICE_STATUSES: dict[str, tuple[int, str]] = {
    "INITIATING": (1, "yellow"),
    "WAITING_FOR_USER": (2, "blue"),
    "AVAILABLE": (3, "green"),
    "FAILED": (4, "red"),
    "DELETING": (5, "orange"),
    "UNKNOWN": (6, "purple"),
}


# --- PromQL ---------------------------------------------------------------------------------


def only_selected(expr: str) -> str:
    """``expr`` (per-endpoint series) restricted to the selected endpoints."""
    return f"{expr}\nand on ({JOIN})\n{SELECTED}"


def with_name(expr: str) -> str:
    """``expr`` (per-endpoint series) restricted to the selected endpoints, with their name."""
    return f"{expr}\n* on ({JOIN}) group_left (name)\n{SELECTED}"


def only_selected_services(expr: str) -> str:
    """``expr`` (per-service series) restricted to the selected endpoint services."""
    return f"{expr}\nand on ({SERVICE_JOIN})\n{SERVICES_SELECTED}"


def status_number(
    metric: str = "atlas_interface_endpoint_status",
    statuses: dict[str, tuple[int, str]] = STATUSES,
) -> str:
    """The current status of each endpoint (or service) as the number in ``statuses``.

    The state set has exactly one series at 1, so the sum of ``series * number`` is the number
    of the current status. Each provider exports only its own statuses; the others' terms
    are simply empty for it.
    """
    terms = "\n  or ".join(
        f'({metric}{{job=~"$job", status="{status}"}} * {number})'
        for status, (number, _) in statuses.items()
    )
    return f"sum without (status) (\n  {terms}\n)"


def quantile(q: float, metric: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) "
        f'(rate({metric}_bucket{{job=~"$job"}}[$__rate_interval])))'
    )


# --- building blocks --------------------------------------------------------------------------


def query(
    expr: str,
    legend: str | None = None,
    *,
    ref_id: str = "A",
    instant: bool = False,
    as_table: bool = False,
) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    if legend is not None:
        target = target.legend_format(legend)
    target = target.instant() if instant else target.range()
    if as_table:
        target = target.format(PromQueryFormat.TABLE)
    return target


def value_map(entries: dict[str, tuple[str, str]]) -> model.ValueMap:
    """A value mapping: value -> (text, colour)."""
    return model.ValueMap(
        options={
            value: model.ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(entries.items())
        }
    )


def coloured_text(mapping: model.ValueMap) -> list[model.DynamicConfigValue]:
    """A table column whose values show as the mapping's text in the mapping's colour."""
    return [
        model.DynamicConfigValue(id_val="mappings", value=[mapping]),
        model.DynamicConfigValue(
            id_val="custom.cellOptions", value=common.TableColorTextCellOptions()
        ),
    ]


ERROR_FLAG = value_map({"0": ("no", "green"), "1": ("errorMessage", "red")})
UP_FLAG = value_map({"1": ("yes", "green"), "0": ("no", "red")})


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def fixed_color(color: str) -> dash.FieldColor:
    return dash.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color(color)


def fixed_color_value(color: str) -> model.FieldColor:
    return model.FieldColor(mode=model.FieldColorModeId.FIXED, fixed_color=color)


def last_value() -> common_builder.ReduceDataOptions:
    return common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("")


def legend_list() -> common_builder.VizLegendOptions:
    return (
        common_builder.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .calcs([])
    )


def tooltip_all() -> common_builder.VizTooltipOptions:
    return (
        common_builder.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.DESCENDING)
    )


def status_timeline(
    title: str,
    description: str,
    height: int,
    target: prometheus.Dataquery,
    mappings: model.ValueMap,
) -> statetimeline.Panel:
    """A full-width timeline of status numbers, shown as their mapped names and colours."""
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(24)
        .height(height)
        .with_target(target)
        .mappings([mappings])
        .color_scheme(fixed_color("text"))
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(True)
        .row_height(0.9)
        .line_width(0)
        .fill_opacity(80)
        .align_value(common.TimelineValueAlignment.LEFT)
        .legend(legend_list())
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.SINGLE))
    )


def merged_table(
    title: str,
    description: str,
    height: int,
    expressions: Sequence[str],
    *,
    hidden: Sequence[str],
    columns: Sequence[str],
    renamed: Mapping[str, str],
    sorted_by: str,
) -> table.Panel:
    """A full-width table of one row per series: the instant ``expressions`` (ref ids A, B,
    ...) share job, instance and the ids (and Time, the same evaluation time for all), so
    merge joins their rows on those; then ``hidden`` columns go, the rest stand in the order
    of ``columns``, some ``renamed``."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(24)
        .height(height)
    )
    for ref_id, expr in zip(string.ascii_uppercase, expressions, strict=False):
        panel = panel.with_target(query(expr, ref_id=ref_id, instant=True, as_table=True))
    organize = {
        "excludeByName": dict.fromkeys(hidden, True),
        "indexByName": {name: index for index, name in enumerate(columns)},
        "renameByName": dict(renamed),
    }
    return (
        panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options=organize))
        .sort_by([common_builder.TableSortByFieldState().display_name(sorted_by).desc(False)])
        .cell_height(common.TableCellHeight.SM)
        .footer(common_builder.TableFooterOptions().show(False))
    )


def stat_panel(title: str, description: str, width: int) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(5)
        .reduce_options(last_value())
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.AUTO)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
    )


def time_series_panel(title: str, description: str, width: int, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .unit(unit)
        .min(0)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(legend_list())
        .tooltip(tooltip_all())
    )


# --- rows -------------------------------------------------------------------------------------


def at_a_glance() -> list[dash.Row | dash.Panel | stat.Panel]:
    status_colours: list[cogbuilder.Builder[model.DashboardFieldConfigSourceOverrides]] = [
        dash.DashboardFieldConfigSourceOverrides()
        .matcher(model.MatcherConfig(id_val="byName", options=status))
        .properties([model.DynamicConfigValue(id_val="color", value=fixed_color_value(color))])
        for status, (_, color) in STATUSES.items()
    ]
    return [
        dash.Row("At a glance"),
        stat_panel(
            "Endpoints by status",
            "How many of the selected endpoints Atlas currently reports in each status "
            "(statuses with no endpoint are not shown).",
            6,
        )
        .with_target(
            query(
                "count by (status) (\n"
                + only_selected('atlas_interface_endpoint_status{job=~"$job"} == 1')
                + "\n)",
                "{{status}}",
                instant=True,
            )
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common.BigValueColorMode.VALUE)
        .color_scheme(fixed_color("text"))
        .overrides(status_colours),
        stat_panel(
            "Firing alerts",
            "Selected endpoints for which each of the daemon's alerts (rejected, failed, "
            "error_message, not_found, unreachable, stuck) is firing now.",
            6,
        )
        .with_target(
            query(
                "sum by (alert) (\n"
                + only_selected('atlas_interface_endpoint_alert_firing{job=~"$job"}')
                + "\n)",
                "{{alert}}",
                instant=True,
            )
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .thresholds(thresholds((None, "green"), (1, "red")))
        .decimals(0),
        stat_panel(
            "Monitor up",
            "Whether Prometheus can scrape each atlas-endpoint-monitor instance.",
            3,
        )
        .with_target(query('up{job=~"$job"}', "{{instance}}", instant=True))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("UP", "green"), "0": ("DOWN", "red")})])
        .thresholds(thresholds((None, "red"), (1, "green"))),
        stat_panel(
            "Endpoints configured",
            "How many endpoints in the monitor's configuration match the selection.",
            3,
        )
        .with_target(query(f"count(\n{SELECTED}\n)", "configured", instant=True))
        .color_mode(common.BigValueColorMode.NONE)
        .no_value("0"),
        stat_panel(
            "Endpoints answering",
            "How many of the selected endpoints got a valid answer from Atlas on their last poll.",
            3,
        )
        .with_target(
            query(
                "sum(\n" + only_selected('atlas_interface_endpoint_up{job=~"$job"}') + "\n)",
                "answering",
                instant=True,
            )
        )
        .color_mode(common.BigValueColorMode.NONE)
        .no_value("0"),
        stat_panel(
            "Last poll cycle",
            "Time since each monitor instance finished its last poll cycle; it should stay "
            "below the poll interval.",
            3,
        )
        .with_target(
            query(
                "time() - max by (instance) "
                '(atlas_monitor_last_poll_cycle_timestamp_seconds{job=~"$job"})',
                "{{instance}}",
                instant=True,
            )
        )
        .unit("s")
        .decimals(0)
        .color_mode(common.BigValueColorMode.NONE),
    ]


def endpoints() -> list[dash.Row | statetimeline.Panel | table.Panel]:
    status_mappings = value_map(
        {str(number): (status, color) for status, (number, color) in STATUSES.items()}
    )
    status_text_mappings = value_map(
        {status: (status, color) for status, (_, color) in STATUSES.items()}
    )
    timeline = status_timeline(
        "Status over time",
        "The connection status Atlas reported for each selected endpoint over time "
        "(AWS, Azure and GCP statuses alike); gaps mean Atlas had no status to give "
        "(not polled yet, or 404).",
        10,
        query(with_name(status_number()), "{{name}}"),
        status_mappings,
    )
    overview = (
        merged_table(
            "Endpoints",
            "One row per selected endpoint: its cloud provider, current status, whether Atlas "
            "reports an errorMessage, whether the last poll got an answer, and how long it "
            "has been in its status.",
            10,
            [
                f"max by ({JOIN}, cloud_provider, name) (\n{SELECTED}\n)",
                f"max by ({JOIN}, status) (\n"
                + only_selected('atlas_interface_endpoint_status{job=~"$job"} == 1')
                + "\n)",
                f"max by ({JOIN}) (\n"
                + only_selected('atlas_interface_endpoint_error{job=~"$job"}')
                + "\n)",
                f"max by ({JOIN}) (\n"
                + only_selected('atlas_interface_endpoint_up{job=~"$job"}')
                + "\n)",
                f"max by ({JOIN}) (\n"
                + only_selected(
                    'time() - atlas_interface_endpoint_status_since_timestamp_seconds{job=~"$job"}'
                )
                + "\n)",
            ],
            hidden=["Time", "Value #A", "Value #B", "instance", "job", "private_link_id"],
            columns=[
                "name",
                "cloud_provider",
                "group_id",
                "interface_endpoint_id",
                "status",
                "Value #C",
                "Value #D",
                "Value #E",
            ],
            renamed={"Value #C": "error", "Value #D": "up", "Value #E": "time in status"},
            sorted_by="name",
        )
        .override_by_name("status", coloured_text(status_text_mappings))
        .override_by_name("error", coloured_text(ERROR_FLAG))
        .override_by_name("up", coloured_text(UP_FLAG))
        .override_by_name(
            "time in status",
            [model.DynamicConfigValue(id_val="unit", value="dtdurations")],
        )
    )
    return [dash.Row("Endpoints"), timeline, overview]


def endpoint_services() -> list[dash.Row | statetimeline.Panel | table.Panel]:
    """Atlas' side of each private link (API v2 only; a v1.0 monitor exports no such series)."""
    timeline = status_timeline(
        "Endpoint service status over time",
        "The status Atlas reported for each selected endpoint service (Atlas' side of the "
        "private link, per cloud provider and region; Atlas API v2 only) over time. A "
        "FAILED service takes every endpoint behind it down.",
        8,
        query(
            status_number("atlas_endpoint_service_status", SERVICE_STATUSES)
            + f"\n* on ({SERVICE_JOIN}) group_left (region)\n{SERVICES_SELECTED}",
            "{{cloud_provider}} {{region}} {{private_link_id}}",
        ),
        value_map(
            {str(number): (status, color) for status, (number, color) in SERVICE_STATUSES.items()}
        ),
    )
    overview = (
        merged_table(
            "Endpoint services",
            "One row per selected endpoint service: cloud provider, region, project, service "
            "id, its current status, whether Atlas reports an errorMessage for it (the text is "
            "in the monitor's log) and whether the last poll got an answer.",
            8,
            [
                f"max by ({SERVICE_JOIN}, region) (\n{SERVICES_SELECTED}\n)",
                f"max by ({SERVICE_JOIN}, status) (\n"
                + only_selected_services('atlas_endpoint_service_status{job=~"$job"} == 1')
                + "\n)",
                f"max by ({SERVICE_JOIN}) (\n"
                + only_selected_services('atlas_endpoint_service_error{job=~"$job"}')
                + "\n)",
                f"max by ({SERVICE_JOIN}) (\n"
                + only_selected_services('atlas_endpoint_service_up{job=~"$job"}')
                + "\n)",
            ],
            hidden=["Time", "Value #A", "Value #B", "instance", "job"],
            columns=[
                "cloud_provider",
                "region",
                "group_id",
                "private_link_id",
                "status",
                "Value #C",
                "Value #D",
            ],
            renamed={
                "private_link_id": "endpoint service",
                "Value #C": "error",
                "Value #D": "up",
            },
            sorted_by="cloud_provider",
        )
        .override_by_name(
            "status",
            coloured_text(
                value_map(
                    {status: (status, color) for status, (_, color) in SERVICE_STATUSES.items()}
                )
            ),
        )
        .override_by_name("error", coloured_text(ERROR_FLAG))
        .override_by_name("up", coloured_text(UP_FLAG))
    )
    return [dash.Row("Endpoint services"), timeline, overview]


def atlas_api() -> list[dash.Row | timeseries.Panel]:
    return [
        dash.Row("Atlas API"),
        time_series_panel(
            "Requests by code",
            "Requests per second to the Atlas API by HTTP status (401 are Digest challenges, "
            "error means no response came).",
            8,
            "reqps",
        ).with_target(
            query(
                "sum by (code) "
                '(rate(atlas_monitor_api_requests_total{job=~"$job"}[$__rate_interval]))',
                "{{code}}",
            )
        ),
        time_series_panel(
            "Request latency",
            "Time until Atlas' response headers arrived, as the 50th, 90th and 99th "
            "percentile over all requests.",
            8,
            "s",
        )
        .with_target(
            query(quantile(0.5, "atlas_monitor_api_request_duration_seconds"), "p50", ref_id="A")
        )
        .with_target(
            query(quantile(0.9, "atlas_monitor_api_request_duration_seconds"), "p90", ref_id="B")
        )
        .with_target(
            query(quantile(0.99, "atlas_monitor_api_request_duration_seconds"), "p99", ref_id="C")
        ),
        time_series_panel(
            "Poll cycle duration",
            "How long one poll cycle over all endpoints takes (median, 99th percentile and "
            "mean) against the poll interval it must stay below.",
            8,
            "s",
        )
        .with_target(
            query(quantile(0.5, "atlas_monitor_poll_cycle_duration_seconds"), "p50", ref_id="A")
        )
        .with_target(
            query(quantile(0.99, "atlas_monitor_poll_cycle_duration_seconds"), "p99", ref_id="B")
        )
        .with_target(
            query(
                'sum(rate(atlas_monitor_poll_cycle_duration_seconds_sum{job=~"$job"}'
                "[$__rate_interval]))\n/\n"
                'sum(rate(atlas_monitor_poll_cycle_duration_seconds_count{job=~"$job"}'
                "[$__rate_interval]))",
                "mean",
                ref_id="C",
            )
        )
        .with_target(
            query(
                'max(atlas_monitor_poll_interval_seconds{job=~"$job"})',
                "poll interval",
                ref_id="D",
            )
        )
        .override_by_name(
            "poll interval",
            [
                model.DynamicConfigValue(id_val="color", value=fixed_color_value("red")),
                model.DynamicConfigValue(
                    id_val="custom.lineStyle", value=common.LineStyle(fill="dash", dash=[10, 10])
                ),
                model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ],
        ),
        time_series_panel(
            "Alerts emitted",
            "Firing alert lines the daemon wrote, reminders included, by alert name.",
            12,
            "short",
        )
        .with_target(
            query(
                "sum by (alert) "
                '(increase(atlas_monitor_alerts_total{job=~"$job"}[$__rate_interval]))',
                "{{alert}}",
            )
        )
        .decimals(0),
        time_series_panel(
            "Endpoints added",
            "Add-on-missing outcomes for endpoints Atlas did not know: added, dry_run "
            "(logged only) or failed.",
            12,
            "short",
        )
        .with_target(
            query(
                "sum by (result) "
                '(increase(atlas_monitor_endpoints_added_total{job=~"$job"}[$__rate_interval]))',
                "{{result}}",
            )
        )
        .decimals(0),
    ]


# --- the dashboard ----------------------------------------------------------------------------


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    every = model.VariableOption(selected=True, text="All", value="$__all")
    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dash.QueryVariable("job")
        .label("Job")
        .description("The Prometheus job(s) scraping atlas-endpoint-monitor.")
        .datasource(DATASOURCE)
        .query("label_values(atlas_monitor_build_info, job)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .multi(False)
        .current(every),
        dash.QueryVariable("group_id")
        .label("Atlas project")
        .description("Atlas project ids (group_id) of the endpoints to show.")
        .datasource(DATASOURCE)
        .query('label_values(atlas_interface_endpoint_info{job=~"$job"}, group_id)')
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .multi(True)
        .current(every),
        dash.QueryVariable("cloud_provider")
        .label("Cloud provider")
        .description("Cloud providers (AWS, AZURE, GCP) of the endpoints to show.")
        .datasource(DATASOURCE)
        .query(
            'label_values(atlas_interface_endpoint_info{job=~"$job", group_id=~"$group_id"}, '
            "cloud_provider)"
        )
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(every),
        dash.QueryVariable("label")
        .label("Filter by")
        .description(
            "A label of atlas_interface_endpoint_info (name, or a label from the config's "
            "labels) to select endpoints by."
        )
        .datasource(DATASOURCE)
        .query('label_names(atlas_interface_endpoint_info{job=~"$job"})')
        .regex(
            "/^(?!(__name__|job|instance|group_id|private_link_id|interface_endpoint_id"
            "|cloud_provider)$).+/"
        )
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(False)
        .multi(False)
        .current(model.VariableOption(selected=True, text="name", value="name")),
        dash.QueryVariable("label_value")
        .label("Value")
        .description("The values of the chosen label to show; All includes endpoints without it.")
        .datasource(DATASOURCE)
        .query(
            'label_values(atlas_interface_endpoint_info{job=~"$job", group_id=~"$group_id", '
            'cloud_provider=~"$cloud_provider"}, $label)'
        )
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(every),
    ]


def build() -> model.Dashboard:
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description(
            "MongoDB Atlas private endpoints (AWS PrivateLink, Azure Private Link, GCP Private "
            "Service Connect) and their endpoint services as seen by atlas-endpoint-monitor."
        )
        .tags(["atlas", "mongodb", "privatelink", "atlas-endpoint-monitor"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dash.DashboardLink("README")
            .type(model.DashboardLinkType.LINK)
            .url(README)
            .icon("doc")
            .tooltip("What the monitor does, its metrics and alerts")
            .target_blank(True)
        )
        .link(
            dash.DashboardLink("Runbook")
            .type(model.DashboardLinkType.LINK)
            .url(RUNBOOK)
            .icon("info")
            .tooltip("What to do when an alert fires")
            .target_blank(True)
        )
    )
    for variable in variables():
        board = board.with_variable(variable)
    for item in [*at_a_glance(), *endpoints(), *endpoint_services(), *atlas_api()]:
        board = board.with_row(item) if isinstance(item, dash.Row) else board.with_panel(item)
    result = board.build()
    # The SDK leaves panel ids unset (rows get 0); Grafana wants them unique.
    for number, panel in enumerate(result.panels or [], start=1):
        panel.id_val = number
    return result


def render() -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
