//! The service's workers consult the result cache in the queue database: a clip submitted again
//! (as an upload this time, under another name) is a cache hit, on SQLite and on PostgreSQL, and
//! its result row and audio are those of the first job, but for its own id and name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use speechmill_queue::testing::TempPostgres;
use speechmill_queue::{FastRandom, QueueConfig, SystemClock, open_stores};
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::service::{secret_path, sqlite_url};
use speechmill_server::telemetry::metrics::{self as telemetry_metrics, PrometheusHandle};
use speechmill_server::{Service, ServiceConfig};
use tokio::sync::oneshot;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/audio").canonicalize().unwrap()
}

struct Running {
    base: String,
    key: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(data: &Path, database_url: Option<String>) -> Running {
        let mut config = ServiceConfig::new(data.to_path_buf());
        config.input_roots = vec![examples()];
        config.workers = 1;
        config.database_url = database_url;
        let service = Service::open(config).await.unwrap();
        let hasher = KeyHasher::load_or_create(&secret_path(data)).unwrap();
        let key =
            create_key(service.state().keys.as_ref(), &hasher, &[Scope::Submit, Scope::Read], "test").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service
                .run(Some(listener), async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Running { base, key: key.key, http: reqwest::Client::new(), stop: Some(stop), task }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await.unwrap()
    }

    async fn created(response: reqwest::Response) -> String {
        assert_eq!(response.status(), 201);
        let job: Value = response.json().await.unwrap();
        job["id"].as_str().unwrap().to_string()
    }

    async fn submit_path(&self, path: &str) -> String {
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "path": path }))
            .send()
            .await
            .unwrap();
        Self::created(response).await
    }

    async fn submit_upload(&self, bytes: Vec<u8>, name: &str) -> String {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()));
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(&self.key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        Self::created(response).await
    }

    /// Waits for the job to succeed; returns its result row and audio.
    async fn succeeded(&self, id: &str) -> (serde_json::Map<String, Value>, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job: Value = self.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap();
            let state = job["state"].as_str().unwrap_or_default().to_string();
            if state == "succeeded" {
                break;
            }
            assert!(!["rejected", "dead", "cancelled"].contains(&state.as_str()), "job {id} ended {job}");
            assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let view: Value = self.get(&format!("/v1/jobs/{id}/result")).await.json().await.unwrap();
        let Value::Object(row) = view["row"].clone() else { panic!("the result has no row: {view}") };
        let audio = self.get(&format!("/v1/jobs/{id}/result/audio")).await.bytes().await.unwrap().to_vec();
        (row, audio)
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// The value of `speechmill_cache_lookups_total{result="<result>"}` on the page.
fn lookups(handle: &PrometheusHandle, result: &str) -> u64 {
    let page = handle.render();
    let prefix = format!("speechmill_cache_lookups_total{{result=\"{result}\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in the metrics page"))
        .trim()
        .parse()
        .unwrap()
}

/// A path job, then the same bytes uploaded under another name: the second is a hit with the
/// first's result.
async fn a_resubmitted_clip_is_a_cache_hit(handle: &PrometheusHandle, database_url: Option<String>) {
    let data = tempfile::tempdir().unwrap();
    let node = Running::start(data.path(), database_url.clone()).await;
    let (hits, misses) = (lookups(handle, "hit"), lookups(handle, "miss"));

    let first = node.submit_path("cmu/cards_005.wav").await;
    let (first_row, first_audio) = node.succeeded(&first).await;
    assert_eq!((lookups(handle, "hit"), lookups(handle, "miss")), (hits, misses + 1), "the first job is a miss");

    let bytes = std::fs::read(examples().join("cmu/cards_005.wav")).unwrap();
    let second = node.submit_upload(bytes, "another-name.wav").await;
    let (second_row, second_audio) = node.succeeded(&second).await;
    assert_eq!((lookups(handle, "hit"), lookups(handle, "miss")), (hits + 1, misses + 1), "the second job is a hit");

    assert!(first_audio == second_audio, "the cached audio is the first job's, byte for byte");
    assert!(first_audio.starts_with(b"fLaC"));
    // Everything but the job's own names is the first job's.
    assert_eq!(second_row["id"], second);
    assert_eq!(second_row["source"], "another-name.wav");
    let without_names = |row: &serde_json::Map<String, Value>| {
        let mut row = row.clone();
        for key in ["id", "source", "audio_path"] {
            row.remove(key);
        }
        row
    };
    assert_eq!(without_names(&first_row), without_names(&second_row));
    assert!(first_row["snr_db"].as_f64().is_some(), "{first_row:?}");
    node.stop().await;

    // One entry, in the queue database's `result_cache` table.
    let url = database_url.unwrap_or_else(|| sqlite_url(data.path()));
    let stores =
        open_stores(&url, QueueConfig::default(), std::sync::Arc::new(SystemClock), std::sync::Arc::new(FastRandom))
            .await
            .unwrap();
    let stats = stores.cache.cache_stats().await.unwrap();
    assert_eq!(stats.entries, 1);
    assert!(stats.bytes > first_audio.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmitted_clip_is_a_cache_hit_on_sqlite_and_on_postgres() {
    // One test, so that the process-wide metrics count only its own jobs.
    let handle = telemetry_metrics::install().unwrap();
    a_resubmitted_clip_is_a_cache_hit(&handle, None).await;
    let database = TempPostgres::create().await;
    a_resubmitted_clip_is_a_cache_hit(&handle, Some(database.url())).await;
}
