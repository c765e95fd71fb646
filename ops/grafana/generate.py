#!/usr/bin/env python3
"""Writes speechmill's Grafana dashboards (ops/grafana/dashboards/*.json).

The dashboards are generated so that their PromQL, units and layout stay
consistent; the JSON is committed, and `generate.py --check` (run by
scripts/check-ops.sh) fails when the committed JSON differs from what this
script writes. Edit this script, run it, commit both.

Every panel reads the data source chosen by the dashboard variable
`datasource`, whose default is the provisioned Prometheus data source with
uid `speechmill-prometheus` (ops/grafana/provisioning/datasources).

Standard library only.
"""

import argparse
import json
import sys
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "speechmill-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="speechmill",instance=~"$instance"'
RATE = "$__rate_interval"


# ----------------------------------------------------------------- building
class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _place(self, panel, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)

    def row(self, title):
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0
        self._place({"type": "row", "title": title, "collapsed": False,
                     "panels": []}, 24, 1)
        self.x, self.y, self.row_height = 0, self.y + 1, 0

    def add(self, panel, w=12, h=8):
        self._place(panel, w, h)


def target(expr, legend="__auto", ref="A", instant=False, fmt=None):
    t = {"refId": ref, "datasource": DS, "expr": expr,
         "legendFormat": legend, "range": not instant, "instant": instant}
    if fmt:
        t["format"] = fmt
    return t


def targets(*pairs, instant=False, fmt=None):
    """(expr, legend) pairs as targets A, B, C, ..."""
    return [target(expr, legend, chr(ord("A") + i), instant, fmt)
            for i, (expr, legend) in enumerate(pairs)]


def thresholds(*steps):
    """steps: (color, from-value) pairs; the first starts at -inf."""
    out = [{"color": steps[0][0], "value": None}]
    out += [{"color": c, "value": v} for c, v in steps[1:]]
    return {"mode": "absolute", "steps": out}


def timeseries(title, description, tgts, unit="short", min_=0, max_=None,
               stack=False, lines=None, legend_table=False):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
              "showPoints": "never", "spanNulls": False}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
        custom["fillOpacity"] = 40
    defaults = {"unit": unit, "custom": custom}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if lines:
        # Dashed threshold lines (burn-rate factors, floors).
        defaults["thresholds"] = thresholds(("transparent", None),
                                            *[("red", v) for v in lines])
        custom["thresholdsStyle"] = {"mode": "dashed"}
    return {
        "type": "timeseries", "title": title, "description": description,
        "datasource": DS, "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table" if legend_table else "list",
                       "placement": "bottom", "showLegend": True,
                       "calcs": ["lastNotNull", "max"] if legend_table else []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, description, expr, unit="short", steps=None, decimals=None,
         legend="__auto", mappings=None):
    defaults = {"unit": unit,
                "thresholds": thresholds(*(steps or [("green", None)]))}
    if decimals is not None:
        defaults["decimals"] = decimals
    if mappings:
        defaults["mappings"] = mappings
    return {
        "type": "stat", "title": title, "description": description,
        "datasource": DS, "targets": [target(expr, legend)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                              "values": False},
            "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
            "orientation": "auto", "textMode": "auto",
        },
    }


def table(title, description, expr, legend="__auto"):
    return {
        "type": "table", "title": title, "description": description,
        "datasource": DS,
        "targets": [target(expr, legend, instant=True, fmt="table")],
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True}}}],
    }


def heatmap(title, description, expr, unit="short"):
    return {
        "type": "heatmap", "title": title, "description": description,
        "datasource": DS,
        "targets": [target(expr, "{{le}}", fmt="heatmap")],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": unit},
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "cellGap": 1,
            "tooltip": {"show": True, "yHistogram": False},
        },
    }


def state_timeline(title, description, expr, legend, mappings):
    return {
        "type": "state-timeline", "title": title, "description": description,
        "datasource": DS, "targets": [target(expr, legend)],
        "fieldConfig": {"defaults": {
            "mappings": mappings,
            "thresholds": thresholds(("green", None), ("orange", 1),
                                     ("red", 2)),
            "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"showValue": "auto", "mergeValues": True,
                    "rowHeight": 0.9},
    }


def var_datasource():
    return {
        "name": "datasource", "label": "Data source", "type": "datasource",
        "query": "prometheus", "regex": "", "hide": 0, "refresh": 1,
        "includeAll": False, "multi": False,
        "current": {"selected": True, "text": "Prometheus",
                    "value": DATASOURCE_UID},
    }


def var_instance():
    return {
        "name": "instance", "label": "Instance", "type": "query",
        "datasource": DS,
        "definition": 'label_values(up{job="speechmill"}, instance)',
        "query": {"query": 'label_values(up{job="speechmill"}, instance)',
                  "refId": "instance"},
        "refresh": 2, "sort": 1, "hide": 0, "regex": "",
        "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def var_custom(name, label, values, default, description):
    return {
        "name": name, "label": label, "type": "custom",
        "description": description,
        "query": ",".join(values), "hide": 0,
        "includeAll": False, "multi": False,
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": v == default, "text": v, "value": v}
                    for v in values],
    }


def dashboard(uid, title, description, layout, variables):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["speechmill"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [{"title": "speechmill dashboards", "type": "dashboards",
                   "tags": ["speechmill"], "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "annotations": {"list": [{
            "name": "speechmill alerts", "datasource": DS, "enable": True,
            "iconColor": "red",
            "expr": 'ALERTS{service="speechmill",alertstate="firing"}',
            "step": "60s", "titleFormat": "{{alertname}}",
            "textFormat": "{{severity}} {{instance}}",
            "useValueForTime": False,
        }]},
        "templating": {"list": variables},
        "panels": layout.panels,
    }


def quantiles(metric, by="", qs=(0.5, 0.95, 0.99), selector=SEL):
    """histogram_quantile targets for a histogram family."""
    group = f"le, {by}" if by else "le"
    pairs = []
    for q in qs:
        expr = (f"histogram_quantile({q}, sum by ({group}) "
                f"(rate({metric}_bucket{{{selector}}}[{RATE}])))")
        legend = f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else "")
        pairs.append((expr, legend))
    return targets(*pairs)


# ------------------------------------------------------------- dashboards
def overview():
    L = Layout()
    L.row("Service")
    L.add(stat("Targets up", "Scrape targets of job speechmill that answer.",
               'sum(up{job="speechmill"})',
               steps=[("red", None), ("green", 1)]), 4, 4)
    L.add(stat("Versions", "Processes per speechmill version.",
               'count by (version) (speechmill_build_info{job="speechmill"})',
               legend="{{version}}"), 4, 4)
    L.add(stat("Requests", "API requests per second, all routes.",
               f"sum(rate(speechmill_http_requests_total{{{SEL}}}[{RATE}]))",
               unit="reqps"), 4, 4)
    L.add(stat("5xx ratio", "Fraction of API responses that were 5xx.",
               f'sum(rate(speechmill_http_requests_total{{{SEL},'
               f'status_class="5xx"}}[{RATE}])) / '
               f"sum(rate(speechmill_http_requests_total{{{SEL}}}[{RATE}]))",
               unit="percentunit", decimals=2,
               steps=[("green", None), ("orange", 0.001), ("red", 0.01)]),
          4, 4)
    L.add(stat("Availability, 30 days",
               "Non-5xx API responses over 30 days (objective 99.9%).",
               "1 - speechmill:slo_availability:error_ratio_rate30d",
               unit="percentunit", decimals=3,
               steps=[("red", None), ("green", 0.999)]), 4, 4)
    L.add(stat("Firing alerts", "speechmill alerts firing now.",
               'count(ALERTS{service="speechmill",alertstate="firing"}) '
               "or vector(0)",
               steps=[("green", None), ("red", 1)]), 4, 4)

    L.row("Rate, errors, duration")
    L.add(timeseries(
        "Requests by route and status",
        "API requests per second by route template, method and status "
        "class.",
        targets((f"sum by (route, method, status_class) "
                 f"(rate(speechmill_http_requests_total{{{SEL}}}[{RATE}]))",
                 "{{method}} {{route}} {{status_class}}")),
        unit="reqps", legend_table=True))
    L.add(timeseries(
        "Error ratio by route",
        "Fraction of responses that were 5xx (server errors) and 4xx "
        "(refused requests, including 429 when the backlog is full).",
        targets((f'sum by (route) (rate(speechmill_http_requests_total{{{SEL},'
                 f'status_class="5xx"}}[{RATE}])) / sum by (route) '
                 f"(rate(speechmill_http_requests_total{{{SEL}}}[{RATE}]))",
                 "5xx {{route}}"),
                (f'sum by (route) (rate(speechmill_http_requests_total{{{SEL},'
                 f'status_class="4xx"}}[{RATE}])) / sum by (route) '
                 f"(rate(speechmill_http_requests_total{{{SEL}}}[{RATE}]))",
                 "4xx {{route}}")),
        unit="percentunit", max_=1))
    L.add(timeseries(
        "Latency, all routes",
        "Quantiles of API request duration.",
        quantiles("speechmill_http_request_duration_seconds"), unit="s"))
    L.add(timeseries(
        "Latency p95 by route",
        "95th percentile of request duration per route template and "
        "method.",
        quantiles("speechmill_http_request_duration_seconds",
                  by="route, method", qs=(0.95,)), unit="s"))
    L.add(timeseries(
        "Submissions answered within 100 ms",
        "Fraction of POST /v1/jobs answered within 100 ms (the latency "
        "SLO's event; objective 99%).",
        targets((f'sum(rate(speechmill_http_request_duration_seconds_bucket{{'
                 f'{SEL},route="/v1/jobs",method="POST",le="0.1"}}[{RATE}])) '
                 f"/ sum(rate(speechmill_http_request_duration_seconds_count{{"
                 f'{SEL},route="/v1/jobs",method="POST"}}[{RATE}]))',
                 "within 100 ms")),
        unit="percentunit", min_=None, max_=1, lines=[0.99]))
    L.add(timeseries(
        "Requests in flight",
        "API requests being served now, per process.",
        targets((f"sum by (instance) "
                 f"(speechmill_http_requests_in_flight{{{SEL}}})",
                 "{{instance}}"))))

    L.row("Processes")
    L.add(timeseries(
        "Scrape health",
        "1 when Prometheus scrapes the process; 0 when it cannot.",
        targets(('up{job="speechmill",instance=~"$instance"}',
                 "{{instance}}")), max_=1))
    L.add(timeseries(
        "Log lines suppressed",
        "Repeated log lines dropped by the rate limiter, per second, by "
        "level: a flood of identical warnings or errors.",
        targets((f"sum by (level) "
                 f"(rate(speechmill_log_events_suppressed_total{{{SEL}}}"
                 f"[{RATE}]))", "{{level}}"))))
    L.add(table(
        "Alerts firing now",
        "speechmill alerts that fire now (ALERTS from Prometheus).",
        'sum by (alertname, severity, instance) '
        '(ALERTS{service="speechmill",alertstate="firing"})'), 24, 6)
    return dashboard(
        "speechmill-overview", "speechmill / Overview",
        "API rate, errors and duration; processes and firing alerts.",
        L, [var_datasource(), var_instance()])


def pipeline():
    L = Layout()
    L.row("Clips")
    L.add(timeseries(
        "Clips by outcome",
        "Clips through the pipeline per second (service and batch).",
        targets((f"sum by (outcome) "
                 f"(rate(speechmill_clips_total{{{SEL}}}[{RATE}]))",
                 "{{outcome}}")), stack=True))
    L.add(timeseries(
        "Acceptance ratio and floor",
        "accepted / (accepted + rejected), against the quality floor "
        "(speechmill:slo_quality:floor in ops/prometheus/slo.rules.yml).",
        targets(("speechmill:slo_quality:acceptance_ratio_rate5m", "5m"),
                ("speechmill:slo_quality:acceptance_ratio_rate1h", "1h"),
                ("speechmill:slo_quality:floor", "floor")),
        unit="percentunit", max_=1))
    L.add(timeseries(
        "Rejections by reason",
        "Rejected clips per second by reason code (docs/reasons.md). "
        "internal_error and timeout are speechmill's own failures.",
        targets((f"sum by (reason) "
                 f"(rate(speechmill_clip_rejections_total{{{SEL}}}[{RATE}]))",
                 "{{reason}}")), stack=True, legend_table=True))
    L.add(table(
        "Rejections in the time range",
        "Rejected clips by reason over the dashboard's time range.",
        f"sort_desc(sum by (reason) "
        f"(increase(speechmill_clip_rejections_total{{{SEL}}}[$__range])))"))

    L.row("Stages and speed")
    L.add(timeseries(
        "Stage duration p95",
        "95th percentile of the time one clip spends in each stage.",
        quantiles("speechmill_stage_duration_seconds", by="stage",
                  qs=(0.95,)), unit="s"))
    L.add(timeseries(
        "Time spent per stage",
        "Seconds of work per second in each stage, all clips: where the "
        "processing time goes.",
        targets((f"sum by (stage) "
                 f"(rate(speechmill_stage_duration_seconds_sum{{{SEL}}}"
                 f"[{RATE}]))", "{{stage}}")), stack=True))
    L.add(timeseries(
        "Clip processing time",
        "Quantiles of the whole time to process one clip.",
        quantiles("speechmill_clip_processing_seconds"), unit="s"))
    L.add(timeseries(
        "Realtime factor",
        "Seconds of audio processed per second of processing, per clip "
        "(p10 is the slow end).",
        quantiles("speechmill_clip_realtime_factor", qs=(0.1, 0.5, 0.9)),
        unit="short"))
    L.add(timeseries(
        "Audio throughput",
        "Seconds of audio decoded and written per second.",
        targets((f"sum(rate(speechmill_audio_input_seconds_total{{{SEL}}}"
                 f"[{RATE}]))", "decoded"),
                (f"sum(rate(speechmill_audio_output_seconds_total{{{SEL}}}"
                 f"[{RATE}]))", "written"))))
    L.add(timeseries(
        "Enhancement failures",
        "Clips whose optional enhancement failed or would have made them "
        "worse, per second (delivered standardised and flagged).",
        targets((f"sum(rate(speechmill_enhancement_failures_total{{{SEL}}}"
                 f"[{RATE}]))", "failures"))))

    L.row("Measured quality of the input")
    L.add(heatmap(
        "SNR",
        "Estimated signal-to-noise ratio of clips, in dB.",
        f"sum by (le) (increase(speechmill_clip_snr_decibels_bucket{{{SEL}}}"
        f"[{RATE}]))", unit="dB"), 8, 8)
    L.add(timeseries(
        "Speech ratio",
        "Fraction of frames with speech, per clip.",
        quantiles("speechmill_clip_speech_ratio", qs=(0.1, 0.5, 0.9)),
        unit="percentunit", max_=1), 8, 8)
    L.add(timeseries(
        "Input loudness",
        "Integrated loudness of the input, LUFS.",
        quantiles("speechmill_clip_loudness_lufs", qs=(0.1, 0.5, 0.9)),
        unit="short", min_=None), 8, 8)
    return dashboard(
        "speechmill-pipeline", "speechmill / Pipeline and quality",
        "Clips accepted and rejected, rejection reasons, stage timings and "
        "the measured quality of the input.",
        L, [var_datasource(), var_instance()])


BREAKER_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "closed", "color": "green", "index": 0},
    "1": {"text": "half-open", "color": "orange", "index": 1},
    "2": {"text": "open", "color": "red", "index": 2}}}]


def queue():
    L = Layout()
    L.row("Now")
    L.add(stat("Backlog", "Jobs waiting: queued + retrying.",
               "speechmill:queue_backlog:max"), 6, 4)
    L.add(stat("Oldest waiting job", "Age of the oldest queued or retrying "
               "job.", "speechmill:queue_oldest_job_age_seconds:max",
               unit="s", steps=[("green", None), ("orange", 300),
                                ("red", 1800)]), 6, 4)
    L.add(stat("Dead letters", "Jobs that failed every attempt and wait "
               "for a replay or a purge.",
               'speechmill:queue_jobs:max{state="dead"}',
               steps=[("green", None), ("orange", 1)]), 6, 4)
    L.add(stat("Drain time", "Time to drain the backlog at the current "
               "completion rate.", "speechmill:queue_backlog:drain_seconds",
               unit="s", steps=[("green", None), ("orange", 300),
                                ("red", 3600)]), 6, 4)

    L.row("Queue")
    L.add(timeseries(
        "Jobs waiting and running",
        "Jobs in the queue database by state (a global gauge: max over "
        "nodes).",
        targets(('max by (state) (speechmill_queue_jobs{job="speechmill",'
                 'state=~"queued|retrying|running"})', "{{state}}")),
        stack=True))
    L.add(timeseries(
        "Jobs in final states",
        "Jobs kept in the queue database by final state.",
        targets(('max by (state) (speechmill_queue_jobs{job="speechmill",'
                 'state=~"succeeded|rejected|dead|cancelled"})',
                 "{{state}}"))))
    L.add(timeseries(
        "Job flow",
        "Jobs per second submitted (by source), claimed by workers, and "
        "finished (by outcome).",
        targets((f"sum by (source) "
                 f"(rate(speechmill_jobs_submitted_total{{{SEL}}}[{RATE}]))",
                 "submitted {{source}}"),
                (f"sum(rate(speechmill_jobs_claimed_total{{{SEL}}}[{RATE}]))",
                 "claimed"),
                (f"sum by (outcome) "
                 f"(rate(speechmill_jobs_finished_total{{{SEL}}}[{RATE}]))",
                 "finished {{outcome}}")), legend_table=True))
    L.add(timeseries(
        "Retries by kind",
        "Failed attempts that go back to the queue, per second.",
        targets((f"sum by (kind) "
                 f"(rate(speechmill_job_retries_total{{{SEL}}}[{RATE}]))",
                 "{{kind}}")), stack=True))
    L.add(timeseries(
        "Submission to final state",
        "Quantiles of the time from submission to a final state (the "
        "freshness SLO counts jobs within 5 minutes).",
        quantiles("speechmill_job_end_to_end_seconds"), unit="s",
        lines=[300]))
    L.add(timeseries(
        "Jobs final within 5 minutes",
        "Fraction of finished jobs that reached their final state within "
        "5 minutes of submission, by outcome.",
        targets((f'sum by (outcome) (rate(speechmill_job_end_to_end_seconds_'
                 f'bucket{{{SEL},le="300"}}[{RATE}])) / sum by (outcome) '
                 f"(rate(speechmill_job_end_to_end_seconds_count{{{SEL}}}"
                 f"[{RATE}]))", "{{outcome}}")),
        unit="percentunit", min_=None, max_=1))

    L.row("Dead letters and callbacks")
    L.add(timeseries(
        "Dead letters",
        "Dead letters in the queue (falls on replay or purge), and jobs "
        "that died per hour.",
        targets(('speechmill:queue_jobs:max{state="dead"}', "dead letters"),
                (f'sum(increase(speechmill_jobs_finished_total{{{SEL},'
                 f'outcome="dead"}}[1h]))', "died in the last hour"))))
    L.add(timeseries(
        "Callbacks",
        "Callback POST attempts per second by outcome.",
        targets((f"sum by (outcome) "
                 f"(rate(speechmill_callbacks_total{{{SEL}}}[{RATE}]))",
                 "{{outcome}}")), stack=True))

    L.row("Dependencies and workers")
    L.add(state_timeline(
        "Circuit breakers",
        "Breaker of each dependency per process: closed, half-open "
        "(trial calls), open (calls refused).",
        'max by (instance, dependency) '
        '(speechmill_breaker_state{job="speechmill",instance=~"$instance"})',
        "{{dependency}} {{instance}}", BREAKER_MAPPINGS), 24, 6)
    L.add(timeseries(
        "Worker slots",
        "Worker slots configured and busy, per process.",
        targets((f"sum by (instance) (speechmill_workers{{{SEL}}})",
                 "slots {{instance}}"),
                (f"sum by (instance) (speechmill_workers_busy{{{SEL}}})",
                 "busy {{instance}}"))), 24, 8)
    return dashboard(
        "speechmill-queue", "speechmill / Queue and dead letters",
        "The durable job queue: backlog, flow, retries, dead letters, "
        "callbacks, breakers and workers.",
        L, [var_datasource(), var_instance()])


SLOS = [
    ("availability", "Availability",
     "API responses that are not 5xx (probes left out); objective 99.9% "
     "over 30 days.", 0.999),
    ("latency", "Submission latency",
     "POST /v1/jobs answered within 100 ms; objective 99% over 30 days.",
     0.99),
    ("freshness", "Job freshness",
     "Jobs final within 5 minutes of submission; objective 99% over 30 "
     "days.", 0.99),
]


def slo():
    L = Layout()
    for name, title, text, objective in SLOS:
        rec = f"speechmill:slo_{name}"
        L.row(f"{title}: {text}")
        L.add(stat(f"{title}, 30 days", "The SLI over the 30-day window.",
                   f"1 - {rec}:error_ratio_rate30d", unit="percentunit",
                   decimals=3, steps=[("red", None), ("green", objective)]),
              4, 8)
        L.add(stat("Error budget remaining",
                   "Share of the 30-day error budget not yet spent "
                   "(negative: overspent).",
                   f"{rec}:error_budget_remaining", unit="percentunit",
                   decimals=1, steps=[("red", None), ("orange", 0),
                                      ("green", 0.25)]), 4, 8)
        burn = [(f"{rec}:error_ratio_rate{w} / on() group_left() "
                 f"(1 - {rec}:objective)", w)
                for w in ("5m", "1h", "6h", "1d", "3d")]
        L.add(timeseries(
            "Burn rate",
            "Error ratio divided by the budget (1 - objective): 1 spends "
            "the budget in exactly 30 days. Dashed: the alert factors "
            "14.4 (page, 1h), 6 (page, 6h), 3 (ticket, 1d), 1 (ticket, 3d).",
            targets(*burn), lines=[1, 3, 6, 14.4]), 8, 8)
        L.add(timeseries(
            "Error budget remaining",
            "Share of the 30-day budget left, over time.",
            targets((f"{rec}:error_budget_remaining", "remaining")),
            unit="percentunit", min_=None, max_=1), 8, 8)
    L.row("Clip quality: acceptance ratio above the floor")
    L.add(stat("Acceptance, 1 day", "accepted / (accepted + rejected) over "
               "a day.", "speechmill:slo_quality:acceptance_ratio_rate1d",
               unit="percentunit", decimals=1), 4, 8)
    L.add(stat("Floor", "The floor (speechmill:slo_quality:floor).",
               "speechmill:slo_quality:floor", unit="percentunit"), 4, 8)
    L.add(timeseries(
        "Acceptance ratio",
        "Acceptance ratio over 1h, 1d and 3d against the floor.",
        targets(("speechmill:slo_quality:acceptance_ratio_rate1h", "1h"),
                ("speechmill:slo_quality:acceptance_ratio_rate1d", "1d"),
                ("speechmill:slo_quality:acceptance_ratio_rate3d", "3d"),
                ("speechmill:slo_quality:floor", "floor")),
        unit="percentunit", min_=None, max_=1), 16, 8)
    L.row("SLO alerts")
    L.add(table(
        "SLO alerts firing or pending",
        "Burn-rate and quality alerts now.",
        'sum by (alertname, severity, alertstate) '
        '(ALERTS{service="speechmill",category="slo"})'), 24, 6)
    return dashboard(
        "speechmill-slo", "speechmill / SLOs and error budget",
        "The four SLOs: 30-day SLI, error budget remaining, burn rates "
        "against the alert factors, and the clip quality floor.",
        L, [var_datasource()])


def capacity():
    L = Layout()
    needed = ("ceil((speechmill:jobs_submitted:rate5m + "
              "speechmill:queue_backlog:max / $target_drain_seconds) / "
              "speechmill:jobs_finished_per_busy_worker:rate5m)")
    L.row("Demand and throughput")
    L.add(timeseries(
        "Arrivals and completions",
        "New jobs per second (arrival rate) against jobs reaching a final "
        "state per second (completion rate). A backlog grows while the "
        "first is above the second.",
        targets(("speechmill:jobs_submitted:rate5m", "arrivals"),
                ("speechmill:jobs_finished:rate5m", "completions"))))
    L.add(timeseries(
        "Load factor",
        "Arrival rate / completion rate: above 1 the backlog grows.",
        targets(("speechmill:jobs_submitted:rate5m / "
                 "speechmill:jobs_finished:rate5m", "load factor")),
        lines=[1]))
    L.add(timeseries(
        "Backlog",
        "Jobs waiting (queued + retrying).",
        targets(("speechmill:queue_backlog:max", "backlog"))))
    L.add(timeseries(
        "Backlog drain time",
        "Time to drain the backlog at the current completion rate. The "
        "ticket SpeechmillBacklogGrowing fires over an hour while growing.",
        targets(("speechmill:queue_backlog:drain_seconds", "drain time")),
        unit="s", lines=[3600]))

    L.row("Workers")
    L.add(timeseries(
        "Worker slots needed",
        "Slots needed to absorb the arrivals and drain the backlog within "
        "the chosen target drain time, at the measured speed of a busy "
        "slot, against the slots there are.",
        targets((needed, "needed for ${target_drain_seconds}s drain"),
                ("speechmill:workers_needed:drain1h", "needed for 1h drain"),
                ("speechmill:workers:sum", "configured"),
                ("speechmill:workers_busy:sum", "busy"))))
    L.add(timeseries(
        "Worker utilisation",
        "Busy slots / configured slots, all processes.",
        targets(("speechmill:workers:utilisation", "utilisation")),
        unit="percentunit", max_=1, lines=[0.9]))
    L.add(timeseries(
        "Speed of a busy slot",
        "Jobs per second, and audio seconds per second, that one busy "
        "worker slot completes on the current mix of jobs.",
        targets(("speechmill:jobs_finished_per_busy_worker:rate5m",
                 "jobs/s per busy slot"),
                (f"sum(rate(speechmill_audio_input_seconds_total{{{SEL}}}"
                 f"[{RATE}])) / speechmill:workers_busy:sum",
                 "audio s/s per busy slot"))))
    L.add(stat(
        "Slots needed now",
        "Slots needed for the chosen target drain time.", needed), 12, 8)

    L.row("Storage")
    L.add(timeseries(
        "Free space",
        "Free share of the data file system, per process.",
        targets((f"speechmill_storage_free_bytes{{{SEL}}} / "
                 f"speechmill_storage_capacity_bytes{{{SEL}}}",
                 "{{instance}} {{volume}}")),
        unit="percentunit", max_=1))
    L.add(timeseries(
        "Time until full",
        "Free bytes / rate of decrease over 6 hours (shown only while the "
        "free space shrinks).",
        targets((f"speechmill_storage_free_bytes{{{SEL}}} / "
                 f"-deriv(speechmill_storage_free_bytes{{{SEL}}}[6h]) "
                 f"and deriv(speechmill_storage_free_bytes{{{SEL}}}[6h]) < 0",
                 "{{instance}} {{volume}}")),
        unit="s", lines=[4 * 3600, 24 * 3600]))
    return dashboard(
        "speechmill-capacity", "speechmill / Capacity",
        "Arrival against completion rate, backlog and drain time, the "
        "worker slots needed for a target drain time, and storage.",
        L, [var_datasource(), var_instance(),
            var_custom("target_drain_seconds", "Target drain time (s)",
                       ["900", "1800", "3600", "14400", "86400"], "3600",
                       "Time within which the backlog should drain, for "
                       "the slots-needed panels.")])


ALL = {
    "speechmill-overview.json": overview,
    "speechmill-pipeline.json": pipeline,
    "speechmill-queue.json": queue,
    "speechmill-slo.json": slo,
    "speechmill-capacity.json": capacity,
}


def render(build):
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail if a committed dashboard "
                             "differs from what would be written")
    args = parser.parse_args()
    stale = []
    for name, build in ALL.items():
        path = DASHBOARDS / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    extra = sorted(p.name for p in DASHBOARDS.glob("*.json")
                   if p.name not in ALL)
    if args.check and (stale or extra):
        for name in stale:
            print(f"generate.py: ops/grafana/dashboards/{name} is not what "
                  f"generate.py writes; run python3 ops/grafana/generate.py",
                  file=sys.stderr)
        for name in extra:
            print(f"generate.py: ops/grafana/dashboards/{name} is not "
                  f"written by generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
