#!/usr/bin/env bash
# End-to-end check of the observability stack on loopback, with the real tools:
#   speechmill serve (metrics on an internal port)
#   -> a real Prometheus scraping it every second, with ops/prometheus/*.rules.yml loaded
#   -> a real Alertmanager routing with ops/alertmanager/alertmanager.yml
#   -> a small webhook receiver standing in for the pager and the ticket queue.
# It runs jobs, checks that the recording rules produce values and that every metric the
# dashboards and rules name is exported (scripts/check-ops.sh --scrape), then stops speechmill
# and waits for SpeechmillTargetDown to reach the pager through Alertmanager. About 3 minutes.
#
# Usage: scripts/e2e-observability.sh   (installs prometheus and alertmanager if missing)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
if ((${#need_apt[@]})); then
    echo "e2e: installing ${need_apt[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The binary as `cargo test --workspace` builds it: after the tests (as in CI) nothing is rebuilt,
# where `cargo build -p speechmill` would resolve other dependency features and rebuild them.
cargo test --workspace --no-run --quiet 2>/dev/null || cargo test --workspace --no-run
speechmill="${CARGO_TARGET_DIR:-$root/target}/debug/speechmill"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "e2e: FAILED: $*" >&2
    if [ -n "${E2E_DEBUG_QUERY:-}" ]; then query "$E2E_DEBUG_QUERY" >&2 || true; fi
    for log in "$work"/*.log; do
        echo "--- $(basename "$log") (last lines)" >&2
        tail -n 20 "$log" >&2
    done
    exit 1
}

# Waits until the command succeeds, up to $1 seconds.
wait_for() {
    local seconds="$1"
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# An instant query; prints the result vector as JSON.
query() {
    set -o pipefail
    curl -sf --get --data-urlencode "query=$1" http://127.0.0.1:9090/api/v1/query |
        python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]["result"]))'
}

# Succeeds when the query answers with at least one sample (fails while Prometheus is down).
has_value() {
    local result
    result="$(query "$1")" || return 1
    [ -n "$result" ] && [ "$result" != "[]" ]
}

# 1. The pager and ticket webhook: appends every notification to alerts.jsonl.
python3 - "$work/alerts.jsonl" >"$work/webhook.log" 2>&1 <<'EOF' &
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
out = sys.argv[1]
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(out, "a") as f:
            f.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.send_response(200)
        self.end_headers()
HTTPServer(("127.0.0.1", 9095), Hook).serve_forever()
EOF
pids+=($!)

# 2. Alertmanager with the repository's routing.
prometheus-alertmanager --config.file=ops/alertmanager/alertmanager.yml \
    --storage.path="$work/alertmanager" --web.listen-address=127.0.0.1:9093 \
    --cluster.listen-address= >"$work/alertmanager.log" 2>&1 &
pids+=($!)

# 3. speechmill serve with its metrics port.
data="$work/data"
key="$("$speechmill" keys create --data-dir "$data" --scopes submit,read,admin 2>/dev/null | tail -n 1)"
"$speechmill" serve --listen 127.0.0.1:18080 --metrics-listen 127.0.0.1:19464 --data-dir "$data" \
    --input-root examples/audio --workers 2 --log-format json >"$work/speechmill.log" 2>&1 &
speechmill_pid=$!
pids+=("$speechmill_pid")
wait_for 30 curl -sf http://127.0.0.1:18080/readyz || fail "speechmill did not become ready"

# 4. Prometheus with the repository's rules, scraping speechmill (file discovery).
mkdir -p "$work/prometheus/e2e/targets"
cp ops/prometheus/*.rules.yml "$work/prometheus/"
cp ops/prometheus/e2e/prometheus.yml "$work/prometheus/e2e/"
echo '[{"targets": ["127.0.0.1:19464"], "labels": {"node": "serve"}}]' >"$work/prometheus/e2e/targets/speechmill.json"
prometheus --config.file="$work/prometheus/e2e/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for 60 has_value 'up{job="speechmill"} == 1' || fail "Prometheus never scraped speechmill"
wait_for 30 curl -sf http://127.0.0.1:9093/-/ready || fail "Alertmanager did not become ready"
echo "e2e: prometheus scrapes speechmill; submitting jobs" >&2

# 5. Real jobs: every example clip, plus requests that fail, so every ratio has data.
ids=()
while IFS= read -r clip; do
    answer="$(curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d "{\"path\": \"${clip#examples/audio/}\"}" http://127.0.0.1:18080/v1/jobs)" || fail "submitting $clip"
    ids+=("$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$answer")")
done < <(find examples/audio -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.mp3' -o -name '*.ogg' \) | sort)
curl -s -o /dev/null http://127.0.0.1:18080/v1/jobs/no-such-job
job_final() {
    local state
    state="$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:18080/v1/jobs/$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')"
    case "$state" in succeeded | rejected | dead | cancelled) return 0 ;; *) return 1 ;; esac
}
for id in "${ids[@]}"; do
    wait_for 120 job_final "$id" || fail "job $id never finished"
done
echo "e2e: ${#ids[@]} jobs final" >&2

# 6. The recording rules produce the values these jobs imply (a NaN or a missing series fails).
check_rule() {
    wait_for "$2" has_value "$1" || fail "recording rule: $1 never held"
    echo "e2e: $1: $(query "$1" | python3 -c 'import json,sys; print([r["value"][1] for r in json.load(sys.stdin)])')" >&2
}
check_rule 'speechmill:jobs_submitted:rate5m > 0' 60
check_rule 'speechmill:jobs_finished:rate5m > 0' 60
check_rule 'speechmill:slo_availability:error_ratio_rate5m == 0' 60
check_rule 'speechmill:slo_latency:error_ratio_rate5m >= 0' 60
check_rule 'speechmill:slo_freshness:error_ratio_rate5m == 0' 60
check_rule 'speechmill:slo_quality:acceptance_ratio_rate5m > 0' 60
check_rule 'speechmill:queue_backlog:max == 0' 60
check_rule 'speechmill:workers:sum == 2' 60
# The budget group is evaluated once a minute.
check_rule 'speechmill:slo_availability:error_budget_remaining == 1' 90
check_rule 'speechmill:slo_freshness:error_budget_remaining == 1' 90

# 7. Everything the rules and dashboards name is exported by this real node.
curl -sf http://127.0.0.1:19464/metrics >"$work/scrape.txt"
promtool check metrics <"$work/scrape.txt" || fail "promtool check metrics"
scripts/check-ops.sh --scrape "$work/scrape.txt" || fail "scripts/check-ops.sh --scrape"

# 8. Stop speechmill: SpeechmillTargetDown fires (after its 2 minutes) and reaches the pager.
kill -TERM "$speechmill_pid"
wait "$speechmill_pid" || true
echo "e2e: speechmill stopped; waiting for SpeechmillTargetDown at the pager (about 2.5 minutes)" >&2
paged() {
    grep -q '"alertname": "SpeechmillTargetDown"' "$work/alerts.jsonl" 2>/dev/null &&
        grep '"alertname": "SpeechmillTargetDown"' "$work/alerts.jsonl" | grep -q '"path": "/pager"\|"path": "/page"'
}
wait_for 240 paged || fail "SpeechmillTargetDown never reached the pager"
grep '"alertname": "SpeechmillTargetDown"' "$work/alerts.jsonl" | head -n 1 |
    python3 -c 'import json,sys; n=json.loads(sys.stdin.readline()); print("e2e: notified", n["path"], [a["labels"]["alertname"]+" "+a["status"] for a in n["body"]["alerts"]])' >&2
echo "e2e: passed" >&2
