//! Observability through the real binary: the metrics page against docs/instrumentation.md and
//! `promtool check metrics`, ECS JSON log lines, and OpenTelemetry spans received by a real
//! OTLP/HTTP receiver (tests/tools/otlp_receiver.py) with the right structure and the same
//! trace ids as the logs.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::*;
use common::*;
use serde_json::{Value, json};

/// Whether a missing external tool fails the test (scripts/test.sh sets it) or skips the check.
fn tools_required() -> bool {
    std::env::var_os("SPEECHMILL_REQUIRE_TOOLS").is_some()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn scrape(port: u16) -> String {
    let response = client().get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Metric family names on a metrics page (from its `# TYPE` lines).
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Metric names in the first column of docs/instrumentation.md's tables.
fn documented_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/instrumentation.md")).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("| `speechmill_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("speechmill_{name}"))
        .collect()
}

/// The value of one sample line (`name{labels} value`) on a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn submit(node: &Node, key: &str, path: &Path, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().post(node.url("/v1/jobs")).bearer_auth(key).json(&json!({ "path": path }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_shows_exactly_the_documented_metrics_and_passes_promtool() {
    let data = tempfile::tempdir().unwrap();
    let key = create_key(data.path(), "submit,read,admin");
    let metrics_port = free_port();
    let input_root = speech_clip().parent().unwrap().to_path_buf();
    let node = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--input-root",
            input_root.to_str().unwrap(),
            "--workers",
            "1",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ],
        &[],
    );
    let submitted = submit(&node, &key, &speech_clip(), &[]).await;
    assert_eq!(submitted.status(), 201);
    let job: Value = submitted.json().await.unwrap();
    wait_for(&node, &key, job["id"].as_str().unwrap(), Duration::from_secs(60), |job| job["state"] == "succeeded")
        .await;
    // A client error and an unknown route are counted too, under fixed labels.
    assert_eq!(client().get(node.url("/v1/jobs/nope")).send().await.unwrap().status(), 401);
    assert_eq!(client().get(node.url("/no/such/route")).send().await.unwrap().status(), 404);
    // Let the sampler read the queue after the job finished.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let page = scrape(metrics_port).await;
    let exported = families(&page);
    let documented = documented_metrics();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/instrumentation.md: {undocumented:?}");
    let missing: Vec<_> = documented.difference(&exported).collect();
    assert!(missing.is_empty(), "documented but not exported after a real job: {missing:?}");

    assert_eq!(sample(&page, "speechmill_jobs_finished_total{outcome=\"succeeded\"}"), Some(1.0));
    assert_eq!(sample(&page, "speechmill_clips_total{outcome=\"accepted\"}"), Some(1.0));
    assert_eq!(sample(&page, "speechmill_queue_jobs{state=\"succeeded\"}"), Some(1.0));
    assert_eq!(sample(&page, "speechmill_stage_duration_seconds_count{stage=\"decode\"}"), Some(1.0));
    assert_eq!(sample(&page, "speechmill_jobs_submitted_total{source=\"path\"}"), Some(1.0));
    assert!(page.contains("route=\"/v1/jobs/{id}\""), "routes are templates");
    assert!(page.contains("route=\"unmatched\""), "unknown paths share one label value");
    assert!(!page.contains(job["id"].as_str().unwrap()), "no job id in any label");
    assert_eq!(sample(&page, "speechmill_workers"), Some(1.0));

    match Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).output_with_input(&page) {
        Some(output) => assert!(
            output.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        None if tools_required() => panic!("promtool is not installed (scripts/setup.sh installs it)"),
        None => eprintln!("promtool not found: skipped `promtool check metrics`"),
    }
}

/// A clip delivered standardised because enhancement would have made it worse is counted in
/// `speechmill_enhancement_failures_total`, and the stage is timed. Real audio: clean studio
/// speech with digital silence in its pauses, which RNNoise fills with its own residue (the
/// estimated SNR falls from 80 to 55 dB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_enhancement_would_make_worse_is_counted_and_delivered() {
    let data = tempfile::tempdir().unwrap();
    let key = create_key(data.path(), "submit,read");
    let metrics_port = free_port();
    let clip = repo().join("testdata/real-speech/alsa-utils/Front_Left.wav");
    let input_root = clip.parent().unwrap().to_path_buf();
    let node = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--input-root",
            input_root.to_str().unwrap(),
            "--workers",
            "1",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ],
        &[("SPEECHMILL_ENHANCE__ENABLED", "true"), ("SPEECHMILL_ENHANCE__METHOD", "rnnoise")],
    );
    let submitted = submit(&node, &key, &clip, &[]).await;
    assert_eq!(submitted.status(), 201);
    let job: Value = submitted.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    wait_for(&node, &key, id, Duration::from_secs(60), |job| job["state"] == "succeeded").await;
    let result: Value = client()
        .get(node.url(&format!("/v1/jobs/{id}/result")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["row"]["enhancement"], "not_improved", "{result:#}");

    let page = scrape(metrics_port).await;
    assert_eq!(sample(&page, "speechmill_enhancement_failures_total"), Some(1.0), "{page}");
    assert_eq!(sample(&page, "speechmill_clips_total{outcome=\"accepted\"}"), Some(1.0));
    assert_eq!(sample(&page, "speechmill_stage_duration_seconds_count{stage=\"enhance\"}"), Some(1.0));
}

/// Runs a command with `input` on standard input; `None` if it cannot be started.
trait OutputWithInput {
    fn output_with_input(&mut self, input: &str) -> Option<std::process::Output>;
}

impl OutputWithInput for Command {
    fn output_with_input(&mut self, input: &str) -> Option<std::process::Output> {
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        Some(child.wait_with_output().unwrap())
    }
}

/// Parses every line as JSON with the ECS fields every line has.
fn ecs_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let object: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            for field in ["@timestamp", "log.level", "message", "ecs.version", "service.name", "service.version"] {
                assert!(object.get(field).is_some(), "no {field}: {line}");
            }
            object
        })
        .collect()
}

/// A running tests/tools/otlp_receiver.py, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    spans_file: PathBuf,
}

impl Receiver {
    fn start(python: &Path, folder: &Path) -> Receiver {
        let spans_file = folder.join("spans.json");
        let mut child = Command::new(python)
            .arg(repo().join("crates/speechmill/tests/tools/otlp_receiver.py"))
            .arg(&spans_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| panic!("the receiver printed {first:?}"));
        Receiver { child, port, spans_file }
    }

    /// The spans received so far.
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.spans_file)
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<Value>>(&text).ok())
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|span| span["name"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_result_flow_sends_linked_spans_with_the_trace_ids_of_its_json_logs() {
    let Some(python) = std::env::var_os("SPEECHMILL_PYTHON").map(PathBuf::from) else {
        assert!(!tools_required(), "SPEECHMILL_PYTHON is not set (scripts/test.sh sets it)");
        eprintln!("SPEECHMILL_PYTHON is not set: skipped the OTLP trace test");
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&python, folder.path());
    let data = folder.path().join("data");
    let key = create_key(&data, "submit,read");
    let input_root = speech_clip().parent().unwrap().to_path_buf();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut node = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--input-root",
            input_root.to_str().unwrap(),
            "--workers",
            "1",
            "--log-format",
            "json",
            "--log-level",
            "info,speechmill_server::http=debug",
        ],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );

    // The caller's trace: the server span must join it.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    let response = submit(
        &node,
        &key,
        &speech_clip(),
        &[("traceparent", traceparent.as_str()), ("x-request-id", "test-request-1")],
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "test-request-1");
    let answered = response.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{caller_trace}-")), "response traceparent {answered}");
    let job: Value = response.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    wait_for(&node, &key, &job_id, Duration::from_secs(60), |job| job["state"] == "succeeded").await;
    assert_eq!(node.terminate(Duration::from_secs(30)), Some(0));

    // Spans arrive within the batch delay; the shutdown flushes the rest.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.spans();
        if !named(&spans, "encode").is_empty() && !named(&spans, "POST /v1/jobs").is_empty() {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans never arrived: {spans:?}");
        std::thread::sleep(Duration::from_millis(100));
    };

    let server = named(&spans, "POST /v1/jobs");
    assert_eq!(server.len(), 1, "{spans:?}");
    let server = server[0];
    assert_eq!(server["trace_id"], caller_trace);
    assert_eq!(server["parent_span_id"], caller_span);
    assert_eq!(server["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(server["attributes"]["http.route"], "/v1/jobs");
    assert_eq!(server["attributes"]["http.request.method"], "POST");
    assert_eq!(server["attributes"]["http.response.status_code"], 201);
    assert_eq!(server["resource"]["service.name"], "speechmill-serve");
    assert!(answered.contains(server["span_id"].as_str().unwrap()), "the response names the server span");

    let jobs = named(&spans, "process jobs");
    assert_eq!(jobs.len(), 1, "{spans:?}");
    let job_span = jobs[0];
    assert_eq!(job_span["kind"], 5, "SPAN_KIND_CONSUMER");
    assert_eq!(job_span["attributes"]["messaging.message.id"], job_id.as_str());
    assert_eq!(
        job_span["links"],
        json!([{ "trace_id": caller_trace, "span_id": server["span_id"] }]),
        "the job links to the request that queued it"
    );
    for stage in ["decode", "standardise", "measure", "gate", "encode", "write"] {
        let stage_spans = named(&spans, stage);
        assert_eq!(stage_spans.len(), 1, "one {stage} span: {spans:?}");
        assert_eq!(stage_spans[0]["parent_span_id"], job_span["span_id"], "{stage} is a child of the job");
        assert_eq!(stage_spans[0]["trace_id"], job_span["trace_id"]);
    }

    // Every line on standard error is ECS JSON; the request's and the job's lines carry the
    // trace ids of their spans.
    let lines = ecs_lines(&node.stderr_lines());
    let request_line = lines
        .iter()
        .find(|line| line["message"] == "request finished" && line["http.request.id"] == "test-request-1")
        .unwrap_or_else(|| panic!("no request line: {lines:?}"));
    assert_eq!(request_line["trace.id"], caller_trace);
    assert_eq!(request_line["span.id"], server["span_id"]);
    assert!(request_line["event.duration"].as_u64().unwrap() > 0);
    let job_lines: Vec<_> = lines.iter().filter(|line| line["job.id"] == job_id.as_str()).collect();
    assert!(job_lines.len() >= 2, "{lines:?}");
    for line in job_lines {
        assert_eq!(line["trace.id"], job_span["trace_id"], "{line}");
    }
    assert!(!node.stderr_lines().concat().contains(&key), "the API key never appears in a log line");
}

#[test]
fn a_node_that_cannot_start_says_why_in_json_lines_without_the_database_password() {
    // A database URL with a password that cannot be reached: the error names it, masked.
    let data = tempfile::tempdir().unwrap();
    let output = speechmill()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(data.path())
        .args(["--database-url", "postgres://speechmill:hunter2@127.0.0.1:1/speechmill"])
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let parsed = ecs_lines(&lines);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let last = parsed.last().expect("a line about the failure");
    assert_eq!(last["log.level"], "error");
    assert!(last["error.message"].as_str().unwrap().contains("queue database"), "{last}");
}
