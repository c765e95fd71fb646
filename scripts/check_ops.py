#!/usr/bin/env python3
"""Checks of speechmill's operational files that no off-the-shelf tool makes.

Called by scripts/check-ops.sh, which runs the real tools (promtool, amtool,
yamllint, shellcheck) around it. Python 3 standard library and PyYAML.

  dashboard-rules OUT   every PromQL expression of every dashboard (panel
                        targets, templating queries, annotations), with the
                        dashboard variables replaced by sample values, as a
                        rules file for `promtool check rules OUT`; also checks
                        that every panel reads the ${datasource} variable
  alerts                every alert has severity (page or ticket), summary,
                        description and a runbook_url that names its own
                        runbook; the runbook exists and the index lists it;
                        each alert has a unit test where it fires and one
                        where it stays silent
  alert-severities      prints "alertname severity" for each alert rule
  metrics [--scrape F]  the speechmill_* metric families that rules and
                        dashboards use, and the recording rules that
                        dashboards use, are defined; with --scrape, each
                        family is in the scrape F (the text of GET /metrics),
                        as a histogram where _bucket is used, with every le
                        bucket a rule or dashboard selects
  list-metrics          prints the metric families the rules and dashboards
                        use, one a line
  inhibition URL        posts test alerts to a running Alertmanager (loaded
                        with ops/alertmanager/alertmanager.yml) and checks
                        which ones its inhibit rules silence
"""

import glob
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted(glob.glob(str(ROOT / "ops/prometheus/*.rules.yml")))
TEST_FILES = sorted(glob.glob(str(ROOT / "ops/prometheus/tests/*.yml")))
DASHBOARDS = sorted(glob.glob(str(ROOT / "ops/grafana/dashboards/*.json")))
RUNBOOKS = ROOT / "docs/runbooks"
INSTRUMENTATION = ROOT / "docs/instrumentation.md"
RUNBOOK_URL = ("https://example.invalid/speechmill/blob/main/"
               "docs/runbooks/{}.md")
SEVERITIES = {"page", "ticket"}

METRIC = re.compile(r"(?<![A-Za-z0-9_:])(speechmill_[A-Za-z0-9_]+)")
RECORDED = re.compile(r"(?<![A-Za-z0-9_:])(speechmill:[A-Za-z0-9_:]+)")
BUCKET_LE = re.compile(
    r'(speechmill_[A-Za-z0-9_]+_bucket)\{([^}]*)\}')
LE = re.compile(r'\ble\s*=\s*"([^"]*)"')
SUFFIXES = ("_bucket", "_sum", "_count")

# Sample values for Grafana's built-in variables.
BUILTIN_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[A-Za-z]+)?\}|\$([A-Za-z0-9_]+)")


class Failures:
    """Collects failure messages; a check fails if any was added."""

    def __init__(self):
        self.messages = []

    def add(self, message):
        self.messages.append(message)

    def finish(self, what):
        for message in self.messages:
            print(f"check-ops: {message}", file=sys.stderr)
        if self.messages:
            print(f"check-ops: {what}: {len(self.messages)} problem(s)",
                  file=sys.stderr)
            return 1
        return 0


def rel(path):
    return os.path.relpath(path, ROOT)


# ------------------------------------------------------------------ rules
def load_rules():
    """(file, group, rule) for every rule of every rules file."""
    out = []
    for path in RULE_FILES:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                out.append((path, group["name"], rule))
    return out


def alert_rules():
    return [(p, g, r) for p, g, r in load_rules() if "alert" in r]


def recorded_names():
    return {r["record"] for _, _, r in load_rules() if "record" in r}


# ------------------------------------------------------------- dashboards
def walk_panels(panels):
    for panel in panels or []:
        yield panel
        yield from walk_panels(panel.get("panels"))


def variable_values(dashboard):
    """A sample value for each templating variable of a dashboard."""
    values = dict(BUILTIN_VARIABLES)
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var.get("includeAll") and var.get("allValue"):
            values[name] = var["allValue"]
            continue
        current = var.get("current", {}).get("value")
        if isinstance(current, list):
            current = current[0] if current else None
        if current in (None, "", "$__all"):
            options = [o.get("value") for o in var.get("options", [])]
            current = options[0] if options else "x"
        values[name] = str(current)
    return values


def substitute(expr, values, where, failures):
    def replace(match):
        name = match.group(1) or match.group(2)
        if name not in values:
            failures.add(f"{where}: unknown dashboard variable ${name}")
            return "x"
        return values[name]
    return VARIABLE.sub(replace, expr)


def template_query_expr(query):
    """The PromQL inside a Grafana Prometheus templating query, or None."""
    if isinstance(query, dict):
        query = query.get("query", "")
    query = (query or "").strip()
    m = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)",
                     query, re.S)
    if m:
        return m.group(1)
    m = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if m:
        return m.group(1)
    if re.fullmatch(r"(label_values|label_names|metrics)\(.*\)", query,
                    re.S) or not query:
        return None
    return query


def dashboard_exprs(failures=None):
    """(dashboard file, where, raw expression, substituted expression)."""
    failures = failures or Failures()
    out = []
    for path in DASHBOARDS:
        with open(path) as f:
            dashboard = json.load(f)
        values = variable_values(dashboard)
        name = rel(path)
        for panel in walk_panels(dashboard.get("panels")):
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"{name}: panel {panel.get('title')!r} " \
                            f"target {target.get('refId')}"
                    out.append((path, where, target["expr"],
                                substitute(target["expr"], values, where,
                                           failures)))
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            expr = template_query_expr(var.get("query"))
            if expr:
                where = f"{name}: variable ${var['name']}"
                out.append((path, where, expr,
                            substitute(expr, values, where, failures)))
        for ann in dashboard.get("annotations", {}).get("list", []):
            if ann.get("expr"):
                where = f"{name}: annotation {ann.get('name')!r}"
                out.append((path, where, ann["expr"],
                            substitute(ann["expr"], values, where, failures)))
    return out


def check_datasources(failures):
    """Every panel and target reads the data source variable."""
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for path in DASHBOARDS:
        with open(path) as f:
            dashboard = json.load(f)
        names = [v["name"] for v in dashboard["templating"]["list"]]
        if "datasource" not in names:
            failures.add(f"{rel(path)}: no templating variable $datasource")
        for panel in walk_panels(dashboard.get("panels")):
            if panel.get("type") == "row":
                continue
            if panel.get("datasource") != expected:
                failures.add(f"{rel(path)}: panel {panel.get('title')!r} "
                             f"does not read ${{datasource}}")
            for target in panel.get("targets", []):
                if target.get("datasource", expected) != expected:
                    failures.add(f"{rel(path)}: panel "
                                 f"{panel.get('title')!r} target "
                                 f"{target.get('refId')} does not read "
                                 f"${{datasource}}")


def cmd_dashboard_rules(out_path):
    failures = Failures()
    exprs = dashboard_exprs(failures)
    check_datasources(failures)
    if not exprs:
        failures.add("no PromQL expression found in ops/grafana/dashboards")
    groups = {}
    for path, where, _raw, expr in exprs:
        group = groups.setdefault(Path(path).stem, [])
        group.append({"record": f"dashboard:expr_{len(group) + 1}",
                      "expr": expr, "labels": {"where": where[:200]}})
    doc = {"groups": [{"name": name, "rules": rules}
                      for name, rules in groups.items()]}
    with open(out_path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False, width=1000)
    print(f"check-ops: {len(exprs)} dashboard expressions from "
          f"{len(DASHBOARDS)} dashboards written to {out_path}")
    return failures.finish("dashboards")


# ---------------------------------------------------------------- alerts
def test_outcomes():
    """alertname -> set of 'fires'/'silent' over all unit tests."""
    seen = {}
    for path in TEST_FILES:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for test in doc.get("tests", []):
            for case in test.get("alert_rule_test", []) or []:
                outcome = "fires" if case.get("exp_alerts") else "silent"
                seen.setdefault(case["alertname"], set()).add(outcome)
    return seen


def cmd_alerts():
    failures = Failures()
    rules = alert_rules()
    if not rules:
        failures.add("no alert rules found in ops/prometheus/*.rules.yml")
    names = set()
    for path, _group, rule in rules:
        name = rule["alert"]
        names.add(name)
        where = f"{rel(path)}: {name}"
        labels = rule.get("labels", {})
        annotations = rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            failures.add(f"{where}: label severity must be page or ticket, "
                         f"not {labels.get('severity')!r}")
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                failures.add(f"{where}: no annotation {key}")
        url = annotations.get("runbook_url")
        if url and url != RUNBOOK_URL.format(name):
            failures.add(f"{where}: runbook_url is {url}, expected "
                         f"{RUNBOOK_URL.format(name)}")
        if not (RUNBOOKS / f"{name}.md").is_file():
            failures.add(f"{where}: no runbook docs/runbooks/{name}.md")
    index = RUNBOOKS / "README.md"
    index_text = index.read_text() if index.is_file() else ""
    if not index_text:
        failures.add("no runbook index docs/runbooks/README.md")
    for name in sorted(names):
        if f"({name}.md)" not in index_text:
            failures.add(f"docs/runbooks/README.md does not link {name}.md")
    for runbook in sorted(RUNBOOKS.glob("*.md")):
        if runbook.name != "README.md" and runbook.stem not in names:
            failures.add(f"{rel(runbook)} is the runbook of no alert")
    outcomes = test_outcomes()
    for name in sorted(names):
        for outcome in ("fires", "silent"):
            if outcome not in outcomes.get(name, set()):
                failures.add(f"{name}: no unit test where it {outcome} "
                             f"(ops/prometheus/tests)")
    for name in sorted(set(outcomes) - names):
        failures.add(f"ops/prometheus/tests test an alert {name} that no "
                     f"rule defines")
    code = failures.finish("alerts")
    if not code:
        print(f"check-ops: {len(rules)} alert rules ({len(names)} alerts): "
              f"labels, annotations, runbooks and tests complete")
    return code


def cmd_alert_severities():
    for _path, _group, rule in alert_rules():
        print(rule["alert"], rule.get("labels", {}).get("severity", ""))
    return 0


# ---------------------------------------------------------------- metrics
def family(name):
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def used_exprs():
    """(where, expression) of every rule and dashboard expression."""
    out = [(f"{rel(p)}: {r.get('record') or r.get('alert')}", r["expr"])
           for p, _g, r in load_rules()]
    out += [(where, expr) for _p, where, _raw, expr in dashboard_exprs()]
    return out


def used_metrics():
    """metric name as used -> set of places."""
    used = {}
    for where, expr in used_exprs():
        for name in METRIC.findall(expr):
            used.setdefault(name, set()).add(where)
    return used


def used_buckets():
    """(bucket metric, le) -> set of places."""
    used = {}
    for where, expr in used_exprs():
        for metric, matchers in BUCKET_LE.findall(expr):
            for le in LE.findall(matchers):
                used.setdefault((metric, le), set()).add(where)
    return used


def parse_scrape(path):
    """(sample names, {family: type}, {bucket metric: set of le})."""
    samples, types, buckets = set(), {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3]
                continue
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s", line)
            if not m:
                continue
            samples.add(m.group(1))
            if m.group(1).endswith("_bucket") and m.group(2):
                for le in LE.findall(m.group(2)):
                    buckets.setdefault(m.group(1), set()).add(le)
    return samples, types, buckets


def cmd_metrics(scrape):
    failures = Failures()
    used = used_metrics()
    if not used:
        failures.add("no speechmill_* metric found in rules or dashboards")
    recorded = recorded_names()
    for where, expr in used_exprs():
        for name in RECORDED.findall(expr):
            if name not in recorded:
                failures.add(f"{where}: uses {name}, which no recording "
                             f"rule in ops/prometheus/*.rules.yml defines")
    families = sorted({family(n) for n in used})
    if INSTRUMENTATION.is_file():
        text = INSTRUMENTATION.read_text()
        for fam in families:
            if fam not in text:
                failures.add(f"{fam} is used by rules or dashboards but not "
                             f"described in docs/instrumentation.md")
    if scrape:
        samples, types, buckets = parse_scrape(scrape)
        scraped_families = set(types) | {family(s) for s in samples}
        if not any(s.startswith("speechmill_") for s in samples):
            failures.add(f"{scrape}: no speechmill_* sample; is it the text "
                         f"of GET /metrics of a running speechmill?")
        for name in sorted(used):
            fam = family(name)
            places = "; ".join(sorted(used[name])[:3])
            if name not in samples and fam not in scraped_families:
                failures.add(f"{name} (family {fam}) is not in the scrape "
                             f"{scrape}; used by {places}")
            elif name.endswith("_bucket") and name not in samples:
                failures.add(f"{name}: {fam} is in the scrape as "
                             f"{types.get(fam, 'untyped')}, not as a "
                             f"histogram; used by {places}")
        for (metric, le), places in sorted(used_buckets().items()):
            if metric in buckets and le not in buckets[metric]:
                failures.add(
                    f'{metric}{{le="{le}"}} is selected by '
                    f'{"; ".join(sorted(places)[:3])}, but the scrape has '
                    f"only the buckets {sorted(buckets[metric], key=_le_key)}")
    code = failures.finish("metrics")
    if not code:
        what = f"all in {scrape}" if scrape else "no scrape given"
        print(f"check-ops: {len(families)} metric families used by rules "
              f"and dashboards; recording rules defined; {what}")
    return code


def _le_key(value):
    try:
        return float(value)
    except ValueError:
        return float("inf")


def cmd_list_metrics():
    for fam in sorted({family(n) for n in used_metrics()}):
        print(fam)
    return 0


# ------------------------------------------------------------- inhibition
def _post_alerts(url, alerts):
    body = json.dumps(alerts).encode()
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", data=body, method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def _get_alerts(url):
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as r:
        return json.load(r)


def cmd_inhibition(url):
    """Posts alerts shaped like the rules' and checks which are inhibited."""
    failures = Failures()
    base = {"service": "speechmill", "job": "speechmill"}

    def alert(name, **labels):
        return {"labels": {"alertname": name, **base, **labels},
                "annotations": {"summary": "check-ops inhibition test"}}

    cases = [
        # (alert, inhibited?)
        (alert("SpeechmillTargetDown", severity="page", category="symptom",
               instance="node-a:9464"), False),
        (alert("SpeechmillBreakerOpen", severity="ticket",
               category="symptom", instance="node-a:9464",
               dependency="database"), True),
        (alert("SpeechmillBreakerOpen", severity="ticket",
               category="symptom", instance="node-b:9464",
               dependency="database"), False),
        (alert("SpeechmillAvailabilityBudgetBurnFast", severity="page",
               category="slo", slo="availability"), False),
        (alert("SpeechmillAvailabilityBudgetBurnSlow", severity="ticket",
               category="slo", slo="availability"), True),
        (alert("SpeechmillFreshnessBudgetBurnSlow", severity="ticket",
               category="slo", slo="freshness"), False),
        (alert("SpeechmillDiskPredictedFull", severity="page",
               category="symptom", instance="node-b:9464", volume="data"),
         False),
        (alert("SpeechmillDiskPredictedFull", severity="ticket",
               category="symptom", instance="node-b:9464", volume="data"),
         True),
    ]
    _post_alerts(url, [a for a, _ in cases])
    deadline = time.time() + 10
    while True:
        got = {}
        for a in _get_alerts(url):
            key = tuple(sorted(a["labels"].items()))
            got[key] = bool(a["status"].get("inhibitedBy"))
        pending = [a for a, inhibited in cases
                   if got.get(tuple(sorted(a["labels"].items()))) is None
                   or got[tuple(sorted(a["labels"].items()))] != inhibited]
        if not pending or time.time() > deadline:
            break
        time.sleep(0.2)
    for a, inhibited in cases:
        key = tuple(sorted(a["labels"].items()))
        labels = ",".join(f"{k}={v}" for k, v in key if k in (
            "alertname", "severity", "instance"))
        if key not in got:
            failures.add(f"inhibition: Alertmanager does not list {labels}")
        elif got[key] != inhibited:
            failures.add(f"inhibition: {labels} should "
                         f"{'' if inhibited else 'not '}be inhibited")
    code = failures.finish("inhibition")
    if not code:
        print(f"check-ops: inhibit rules silence {sum(i for _, i in cases)} "
              f"of {len(cases)} test alerts, as expected")
    return code


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "dashboard-rules" and len(args) == 1:
        return cmd_dashboard_rules(args[0])
    if command == "alerts" and not args:
        return cmd_alerts()
    if command == "alert-severities" and not args:
        return cmd_alert_severities()
    if command == "metrics" and not args:
        return cmd_metrics(None)
    if command == "metrics" and len(args) == 2 and args[0] == "--scrape":
        return cmd_metrics(args[1])
    if command == "list-metrics" and not args:
        return cmd_list_metrics()
    if command == "inhibition" and len(args) == 1:
        return cmd_inhibition(args[0])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
