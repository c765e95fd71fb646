//! A node in-process on 127.0.0.1:0 keeping its files in a real S3-compatible server (moto's,
//! started from the test virtualenv on a free 127.0.0.1 port): uploads and `object_key` jobs
//! processed with their outputs stored as objects and served back through the API, and a storage
//! outage seen by readiness and the storage breaker, then recovered from.
//!
//! Needs `SPEECHMILL_PYTHON` (a Python with `moto[server]`, as `scripts/setup.sh --python`
//! installs); without it the tests skip, unless `SPEECHMILL_REQUIRE_TOOLS` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::breaker::BreakerConfig;
use speechmill_server::service::secret_path;
use speechmill_server::storage::{S3Config, StorageConfig};
use speechmill_server::{Service, ServiceConfig};
use tokio::sync::oneshot;

const BUCKET: &str = "speechmill-test";
const PREFIX: &str = "node-a";

fn tools_required() -> bool {
    std::env::var_os("SPEECHMILL_REQUIRE_TOOLS").is_some()
}

fn python() -> Option<PathBuf> {
    let Some(python) = std::env::var_os("SPEECHMILL_PYTHON").map(PathBuf::from) else {
        assert!(!tools_required(), "SPEECHMILL_PYTHON is not set (scripts/test.sh sets it)");
        eprintln!("SPEECHMILL_PYTHON is not set: skipped the object storage test");
        return None;
    };
    Some(python)
}

fn speech_clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-speech/pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav")
}

/// moto's S3 server on a fixed port (it needs a concrete one), killed when dropped.
struct Moto {
    python: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Moto {
    async fn start(python: PathBuf) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut moto = Moto { python, port, child: None };
        moto.restart().await;
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port), waits for it and creates the bucket (moto
    /// keeps its state in memory, so a restarted server starts empty).
    async fn restart(&mut self) {
        let child = Command::new(&self.python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto.server");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.put(format!("{}/{BUCKET}", self.endpoint())).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "moto did not start on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client of the bucket of its own, independent of the node's.
    fn client(&self) -> impl ObjectStore {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// An object's bytes straight from the server, or `None` when there is no such object.
    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self.client().get(&ObjectPath::from(key)).await {
            Ok(result) => Some(result.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(err) => panic!("cannot read {key}: {err}"),
        }
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        self.client().put(&ObjectPath::from(key), bytes.into()).await.unwrap();
    }

    async fn keys_under(&self, prefix: &str) -> Vec<String> {
        let listed = self.client().list_with_delimiter(Some(&ObjectPath::from(prefix))).await.unwrap();
        listed.objects.iter().map(|object| object.location.to_string()).collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Running {
    base: String,
    key: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(data: &Path, moto: &Moto) -> Running {
        let mut config = ServiceConfig::new(data.to_path_buf());
        config.storage = StorageConfig::S3(S3Config {
            endpoint: Some(moto.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
            request_timeout: Duration::from_secs(3),
            max_retries: 0,
            ..S3Config::from_url(&format!("s3://{BUCKET}/{PREFIX}")).unwrap()
        });
        config.workers = 1;
        config.poll_interval = Duration::from_millis(50);
        config.breaker = BreakerConfig {
            window: Duration::from_secs(30),
            min_calls: 2,
            failure_rate: 0.5,
            open_for: Duration::from_millis(500),
            trial_calls: 1,
        };
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
        // A new connection per request: a refused upload is answered before its body is read and
        // the connection is closed, which a pooled connection would only find out on the next
        // request (a broken pipe that says nothing about the service).
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Running { base, key: key.key, http, stop: Some(stop), task }
    }

    async fn upload(&self, bytes: Vec<u8>) -> reqwest::Response {
        let form =
            reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name("clip.wav"));
        self.http.post(format!("{}/v1/jobs", self.base)).bearer_auth(&self.key).multipart(form).send().await.unwrap()
    }

    async fn submit_json(&self, body: Value) -> reqwest::Response {
        self.http.post(format!("{}/v1/jobs", self.base)).bearer_auth(&self.key).json(&body).send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await.unwrap()
    }

    async fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job: Value = self.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap();
            if ["succeeded", "rejected", "dead", "cancelled"].contains(&job["state"].as_str().unwrap_or_default()) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// Asserts the job succeeded, its result and audio come back through the API, and both are
/// objects under the storage URL's prefix with the same bytes.
async fn assert_stored_outputs(node: &Running, moto: &Moto, job: &Value) {
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let result: Value = node.get(&format!("/v1/jobs/{id}/result")).await.json().await.unwrap();
    let audio_key = result["row"]["audio_path"].as_str().unwrap().to_string();
    assert_eq!(audio_key, format!("audio/{id}.flac"));
    let audio = node.get(&format!("/v1/jobs/{id}/result/audio")).await;
    assert_eq!(audio.status(), 200);
    assert_eq!(audio.headers()["content-type"], "audio/flac");
    let served = audio.bytes().await.unwrap().to_vec();
    assert!(served.starts_with(b"fLaC"), "the served audio is FLAC");
    let stored_audio = moto.object(&format!("{PREFIX}/{audio_key}")).await.expect("audio object");
    assert!(stored_audio == served, "the served audio is the stored object");
    let stored_result = moto.object(&format!("{PREFIX}/results/{id}.json")).await.expect("result object");
    let stored_result: Value = serde_json::from_slice(&stored_result).unwrap();
    assert_eq!(stored_result["id"], id);
    assert_eq!(stored_result["content_hash"], result["row"]["content_hash"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_object_keys_are_processed_with_their_outputs_stored_as_objects() {
    let Some(python) = python() else { return };
    let moto = Moto::start(python).await;
    let data = tempfile::tempdir().unwrap();
    let node = Running::start(data.path(), &moto).await;
    let clip = std::fs::read(speech_clip()).unwrap();
    assert_eq!(node.get("/readyz").await.status(), 200);

    // An upload: stored as an object before the 201, then deleted once the job is final.
    let created = node.upload(clip.clone()).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = node.wait_final(&id).await;
    assert_stored_outputs(&node, &moto, &job).await;
    assert_eq!(job["source"], "clip.wav");
    let uploads = moto.keys_under(&format!("{PREFIX}/uploads")).await;
    assert!(uploads.is_empty(), "the upload object is deleted once the job is final: {uploads:?}");
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("uploads")).unwrap().collect();
    assert!(leftovers.is_empty(), "no local copy of the upload stays behind: {leftovers:?}");

    // An existing object named by its key, relative to the storage URL's prefix; kept after.
    moto.put_object(&format!("{PREFIX}/incoming/a.wav"), clip.clone()).await;
    let created = node.submit_json(json!({ "object_key": "incoming/a.wav", "metadata": { "speaker": "s1" } })).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = node.wait_final(&id).await;
    assert_stored_outputs(&node, &moto, &job).await;
    assert_eq!(job["result"]["source"], "incoming/a.wav");
    assert_eq!(job["result"]["speaker"], "s1");
    assert!(moto.object(&format!("{PREFIX}/incoming/a.wav")).await.is_some(), "a client's object is not deleted");

    // Refused keys: `..`, a missing object, and both a path and a key.
    for (body, expected) in [
        (json!({ "object_key": "incoming/../../etc/passwd" }), "'..'"),
        (json!({ "object_key": "incoming/missing.wav" }), "no object"),
        (json!({ "object_key": "incoming/a.wav", "path": "a.wav" }), "not both"),
    ] {
        let refused = node.submit_json(body.clone()).await;
        assert_eq!(refused.status(), 400, "{body}");
        let problem: Value = refused.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{body}: {problem}");
    }

    let openapi: Value = node.get("/openapi.json").await.json().await.unwrap();
    assert!(openapi["components"]["schemas"]["PathJobRequest"]["properties"]["object_key"].is_object());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_keys_are_refused_with_400_when_files_are_kept_on_local_disk() {
    let data = tempfile::tempdir().unwrap();
    let service =
        Service::open(ServiceConfig { workers: 0, ..ServiceConfig::new(data.path().to_path_buf()) }).await.unwrap();
    let state = service.state().clone();
    let hasher = KeyHasher::load_or_create(&secret_path(data.path())).unwrap();
    let key = create_key(state.keys.as_ref(), &hasher, &[Scope::Submit], "t").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = speechmill_server::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let refused = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&key.key)
        .json(&json!({ "object_key": "incoming/a.wav" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("object storage"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_going_away_makes_readiness_and_submissions_503_and_its_return_resumes_work() {
    let Some(python) = python() else { return };
    let mut moto = Moto::start(python).await;
    let data = tempfile::tempdir().unwrap();
    let node = Running::start(data.path(), &moto).await;
    let clip = std::fs::read(speech_clip()).unwrap();
    assert_eq!(node.get("/readyz").await.status(), 200);

    moto.stop();
    // Two failed checks open the storage breaker (min_calls 2); both answer 503.
    for _ in 0..2 {
        let ready = node.get("/readyz").await;
        assert_eq!(ready.status(), 503);
        let health: Value = ready.json().await.unwrap();
        assert_eq!(health["checks"]["storage"], "unavailable", "{health}");
    }
    let breakers: Value = node.get("/v1/breakers").await.json().await.unwrap();
    let storage = breakers.as_array().unwrap().iter().find(|breaker| breaker["name"] == "storage").unwrap();
    assert_eq!(storage["state"], "open", "{breakers}");
    let refused = node.upload(clip.clone()).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:speechmill:problem:unavailable");
    assert!(problem["detail"].as_str().unwrap().contains("storage"), "{problem}");
    let refused = node.submit_json(json!({ "object_key": "incoming/a.wav" })).await;
    assert_eq!(refused.status(), 503);
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("uploads")).unwrap().collect();
    assert!(leftovers.is_empty(), "a refused upload leaves nothing behind: {leftovers:?}");

    moto.restart().await;
    // Once the open time has passed, readiness is the trial call that closes the breaker.
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.get("/readyz").await.status() != 200 {
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let created = node.upload(clip).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = node.wait_final(&id).await;
    assert_stored_outputs(&node, &moto, &job).await;
    node.stop().await;
}
