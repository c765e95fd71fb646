//! The service end to end through the real binary: `keys create`, `serve`, `worker` and `dlq`
//! as processes, spoken to over HTTP, killed with SIGKILL and stopped with SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::node::*;
use common::*;
use serde_json::{Value, json};

/// A long real-speech clip (the 7.1 s LibriVox recording, 60 times: about 7 minutes), which
/// keeps a worker busy for long enough to kill it or stop it mid-job.
fn long_clip(folder: &Path) -> PathBuf {
    let source =
        repo().join("testdata/real-speech/pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav");
    let mut reader = hound::WavReader::open(source).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let path = folder.join("long.wav");
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..60 {
        for &sample in &samples {
            writer.write_sample(sample).unwrap();
        }
    }
    writer.finalize().unwrap();
    path
}

/// Accept clips of any length, so the long clip succeeds.
const LONG_CLIPS_PASS: (&str, &str) = ("SPEECHMILL_GATE__MAX_DURATION_S", "3600");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_submitted_over_http_is_processed_and_its_result_and_audio_can_be_fetched() {
    let data = tempfile::tempdir().unwrap();
    let key = create_key(data.path(), "submit,read");
    let reader = create_key(data.path(), "read");
    let root = repo().join("testdata/real-speech");
    let mut node = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--input-root",
            root.to_str().unwrap(),
        ],
        &[],
    );
    let http = client();

    // Open endpoints, and the OpenAPI document generated from the code.
    assert_eq!(http.get(node.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(node.url("/readyz")).send().await.unwrap().status(), 200);
    let openapi: Value = http.get(node.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in ["/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/result", "/v1/batches", "/v1/dead-letters", "/readyz"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }

    // No key, a wrong key, a key without the scope.
    let no_key = http.post(node.url("/v1/jobs")).json(&json!({ "path": "x.wav" })).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(no_key.headers()["content-type"], "application/problem+json");
    let problem: Value = no_key.json().await.unwrap();
    assert_eq!(problem["type"], "urn:speechmill:problem:unauthorized");
    let wrong = http.get(node.url("/v1/jobs")).bearer_auth("smk_nope_nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let read_only =
        http.post(node.url("/v1/jobs")).bearer_auth(&reader).json(&json!({ "path": "x.wav" })).send().await.unwrap();
    assert_eq!(read_only.status(), 403);

    // Path confinement: `..`, and a file outside the roots.
    for outside in ["../../Cargo.toml", "/etc/passwd"] {
        let refused =
            http.post(node.url("/v1/jobs")).bearer_auth(&key).json(&json!({ "path": outside })).send().await.unwrap();
        assert_eq!(refused.status(), 400, "{outside}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["type"], "urn:speechmill:problem:path-rejected");
    }

    // A multipart upload of a real recording.
    let bytes = std::fs::read(speech_clip()).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(bytes).file_name("0880.wav"))
        .text("metadata", r#"{"speaker": "librivox", "transcript": "he was not an ill disposed young man"}"#);
    let created = http.post(node.url("/v1/jobs")).bearer_auth(&key).multipart(form).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let job: Value = created.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert!(matches!(job["state"].as_str(), Some("queued" | "running")));

    let done = wait_for(&node, &key, &id, Duration::from_secs(60), |job| {
        job["state"] != "queued" && job["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert!(done["finished_at"].is_string());

    let result: Value = http
        .get(node.url(&format!("/v1/jobs/{id}/result")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &result["row"];
    assert!((row["duration_s"].as_f64().unwrap() - 2.990).abs() < 0.01, "{row}");
    assert_eq!(row["sample_rate"], 16000);
    assert_eq!(row["source"], "0880.wav");
    assert_eq!(row["transcript"], "he was not an ill disposed young man");
    let audio = http.get(node.url(result["audio_url"].as_str().unwrap())).bearer_auth(&key).send().await.unwrap();
    assert_eq!(audio.headers()["content-type"], "audio/flac");
    let audio = audio.bytes().await.unwrap();
    assert_eq!(&audio[..4], b"fLaC");
    assert_eq!(std::fs::read(data.path().join(format!("audio/{id}.flac"))).unwrap(), audio.as_ref());

    // A JSON submission naming a file under the input root, twice with one idempotency key.
    let submit = || {
        http.post(node.url("/v1/jobs"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "clip-0880")
            .json(&json!({ "path": "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav" }))
            .send()
    };
    let first = submit().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = submit().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    // A batch, listed by its id.
    let batch: Value = http
        .post(node.url("/v1/batches"))
        .bearer_auth(&key)
        .json(&json!({ "jobs": [
            { "path": "alsa-utils/Front_Center.wav" },
            { "path": "alsa-utils/Noise.wav" },
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch_id = batch["batch_id"].as_str().unwrap();
    let listed: Value = http
        .get(node.url(&format!("/v1/jobs?batch={batch_id}&limit=1")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    assert!(listed["next_cursor"].is_string());
    let noise = batch["jobs"][1]["id"].as_str().unwrap();
    let noise = wait_for(&node, &key, noise, Duration::from_secs(60), |job| job["finished_at"].is_string()).await;
    assert_eq!(noise["state"], "rejected", "pink noise is not speech: {noise}");
    assert_eq!(noise["result"]["reason"], "no_speech");

    assert_eq!(node.terminate(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_the_job_to_be_completed_exactly_once_after_its_lease_expires() {
    let data = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    long_clip(inputs.path());
    let key = create_key(data.path(), "submit,read");
    let data_dir = data.path().to_str().unwrap();
    let api = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "0",
            "--data-dir",
            data_dir,
            "--input-root",
            inputs.path().to_str().unwrap(),
        ],
        &[],
    );
    let worker_args = |name: &'static str| -> Vec<&str> {
        vec![
            "worker",
            "--workers",
            "1",
            "--lease-seconds",
            "2",
            "--poll-interval-ms",
            "50",
            "--node-name",
            name,
            "--data-dir",
            data_dir,
        ]
    };
    let mut doomed = Node::start(&worker_args("doomed"), &[LONG_CLIPS_PASS]);

    let created: Value = client()
        .post(api.url("/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "path": "long.wav" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let running = wait_for(&api, &key, &id, Duration::from_secs(30), |job| job["state"] == "running").await;
    assert_eq!(running["attempts"], 1);
    doomed.kill_9();

    let survivor = Node::start(&worker_args("survivor"), &[LONG_CLIPS_PASS]);
    let done = wait_for(&api, &key, &id, Duration::from_secs(90), |job| job["finished_at"].is_string()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "one attempt by the killed worker, one by the survivor");
    assert_eq!(done["error"]["kind"], "lease_expired");
    let duration = done["result"]["duration_s"].as_f64().unwrap();
    assert!((duration - 60.0 * 7.1).abs() < 0.5, "{duration}");
    // Exactly one output, complete, under its deterministic name; no temporary file left.
    let audio: Vec<String> = std::fs::read_dir(data.path().join("audio"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(audio, [format!("{id}.flac")]);
    let listed: Value = client().get(api.url("/v1/jobs")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_running_job_back_to_the_queue_when_the_drain_deadline_passes() {
    let data = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    long_clip(inputs.path());
    let key = create_key(data.path(), "submit,read");
    let mut node = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--drain-timeout-seconds",
            "0.2",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--input-root",
            inputs.path().to_str().unwrap(),
        ],
        &[LONG_CLIPS_PASS],
    );
    let created: Value = client()
        .post(node.url("/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "path": "long.wav" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(&node, &key, &id, Duration::from_secs(30), |job| job["state"] == "running").await;
    assert_eq!(node.terminate(Duration::from_secs(20)), Some(0));

    let output = speechmill().args(["dlq", "show", &id, "--data-dir"]).arg(data.path()).output().unwrap();
    assert_exit(&output, 0);
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["state"], "queued", "handed back: {job}");
    assert_eq!(job["attempts"], 0, "a handed-back attempt is not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_times_out_ends_dead_and_the_cli_lists_and_replays_it() {
    let data = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    long_clip(inputs.path());
    let key = create_key(data.path(), "submit,read,admin");
    let node = Node::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--max-attempts",
            "1",
            "--job-timeout-seconds",
            "0.3",
            "--max-backlog",
            "2",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--input-root",
            inputs.path().to_str().unwrap(),
        ],
        &[LONG_CLIPS_PASS],
    );
    let http = client();
    let created: Value = http
        .post(node.url("/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "path": "long.wav" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let dead = wait_for(&node, &key, &id, Duration::from_secs(30), |job| job["state"] == "dead").await;
    assert_eq!(dead["error"]["kind"], "timeout");

    let letters: Value =
        http.get(node.url("/v1/dead-letters")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(letters["jobs"][0]["id"], id.as_str());

    let listed = speechmill().args(["dlq", "list", "--data-dir"]).arg(data.path()).output().unwrap();
    assert_exit(&listed, 0);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(&id) && listed.contains("timeout"), "{listed}");

    let replayed = speechmill().args(["dlq", "replay", &id, "--data-dir"]).arg(data.path()).output().unwrap();
    assert_exit(&replayed, 0);
    let audit: Value =
        http.get(node.url("/v1/audit-log")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(audit[0]["action"], "replay");
    assert_eq!(audit[0]["actor"], "cli");
    assert_eq!(audit[0]["job_id"], id.as_str());
    // Not dead any more (queued or already running again): purging it is refused.
    let purge = speechmill().args(["dlq", "purge", &id, "--data-dir"]).arg(data.path()).output().unwrap();
    assert_exit(&purge, 1);

    // The backlog limit (2): the replayed job plus one more fill it; the next is refused.
    let second =
        http.post(node.url("/v1/jobs")).bearer_auth(&key).json(&json!({ "path": "long.wav" })).send().await.unwrap();
    assert_eq!(second.status(), 201);
    let third =
        http.post(node.url("/v1/jobs")).bearer_auth(&key).json(&json!({ "path": "long.wav" })).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().get("retry-after").is_some());
    let problem: Value = third.json().await.unwrap();
    assert_eq!(problem["type"], "urn:speechmill:problem:backlog");
}

/// Accepts HTTP requests on 127.0.0.1 and sends each request's body to the returned channel,
/// answering 200.
async fn callback_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                loop {
                    let read = stream.read(&mut buffer).await.unwrap();
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        let body: Value = serde_json::from_slice(&request[end + 4..end + 4 + length]).unwrap();
                        let _ = sender.send(body);
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await
                            .unwrap();
                        return;
                    }
                }
            });
        }
    });
    (url, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_section_of_the_configuration_file_and_the_environment_set_up_the_node() {
    let data = tempfile::tempdir().unwrap();
    let key = create_key(data.path(), "submit,read");
    let root = repo().join("testdata/real-speech");
    let config = data.path().join("speechmill.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nworkers = 1\ninput_roots = [{root:?}]\ncallback_hosts = [\"127.0.0.1\"]\n\
             max_upload_bytes = 1000\nlease_seconds = 7.5\n"
        ),
    )
    .unwrap();

    // The effective configuration shows the section, with the environment over the file.
    let shown = speechmill()
        .args(["config", "show", "--config"])
        .arg(&config)
        .env("SPEECHMILL_SERVE__MAX_UPLOAD_BYTES", "4000")
        .output()
        .unwrap();
    assert_exit(&shown, 0);
    let shown = String::from_utf8(shown.stdout).unwrap();
    for line in ["[serve]", "listen = \"127.0.0.1:0\"", "max_upload_bytes = 4000", "lease_seconds = 7.5"] {
        assert!(shown.lines().any(|shown| shown == line), "{line:?} missing from:\n{shown}");
    }

    // Nothing on the command line but the data folder and the file: the file's listen address,
    // worker, input root and callback host are used, and the environment's upload limit.
    let mut node = Node::start(
        &["serve", "--data-dir", data.path().to_str().unwrap(), "--config", config.to_str().unwrap()],
        &[("SPEECHMILL_SERVE__MAX_UPLOAD_BYTES", "4000")],
    );
    let http = client();
    let (hook, mut delivered) = callback_receiver().await;
    let created = http
        .post(node.url("/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "path": "alsa-utils/Front_Center.wav", "callback_url": hook }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let posted = tokio::time::timeout(Duration::from_secs(60), delivered.recv()).await.unwrap().unwrap();
    assert_eq!(posted["id"], id.as_str(), "{posted}");
    assert_eq!(posted["state"], "succeeded", "{posted}");

    let upload = |size: usize| {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(vec![0u8; size]).file_name("zeros.wav"));
        http.post(node.url("/v1/jobs")).bearer_auth(&key).multipart(form).send()
    };
    assert_eq!(upload(2000).await.unwrap().status(), 201, "under the environment's limit, over the file's");
    assert_eq!(upload(8000).await.unwrap().status(), 413);
    assert_eq!(node.terminate(Duration::from_secs(30)), Some(0));

    // A value that cannot work stops the node at start with exit code 2, naming the setting.
    let bad = speechmill()
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--config"])
        .arg(&config)
        .env("SPEECHMILL_SERVE__LEASE_SECONDS", "0")
        .output()
        .unwrap();
    assert_exit(&bad, 2);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("serve.lease_seconds"), "{stderr}");
    // A flag overrides the file and the environment.
    let flagged = speechmill()
        .args(["worker", "--workers", "0", "--data-dir"])
        .arg(data.path())
        .args(["--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_exit(&flagged, 2);
    assert!(String::from_utf8_lossy(&flagged.stderr).contains("at least 1 worker"));
}
