//! A node in-process on 127.0.0.1:0, stopped through its shutdown future: upload limits, path
//! confinement against symlink escapes, cancellation, and readiness during shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::service::secret_path;
use speechmill_server::{Limits, Service, ServiceConfig};
use tokio::sync::oneshot;

struct Running {
    base: String,
    key: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(data: &Path, root: &Path, workers: usize) -> Running {
    let mut config = ServiceConfig::new(data.to_path_buf());
    config.input_roots = vec![root.to_path_buf()];
    config.workers = workers;
    config.limits = Limits { max_upload_bytes: 1000, ..Limits::default() };
    let service = Service::open(config).await.unwrap();
    let hasher = KeyHasher::load_or_create(&secret_path(data)).unwrap();
    let key = create_key(service.state().keys.as_ref(), &hasher, &[Scope::Submit, Scope::Read], "test").await.unwrap();
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
    Running { base, key: key.key, stop: Some(stop), task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_limit_are_refused_with_413_and_leave_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut node = start(data.path(), root.path(), 0).await;
    let http = reqwest::Client::new();
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(vec![0u8; 5000]).file_name("big.wav"));
    let response =
        http.post(format!("{}/v1/jobs", node.base)).bearer_auth(&node.key).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 413);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:speechmill:problem:too-large");
    assert_eq!(std::fs::read_dir(data.path().join("uploads")).unwrap().count(), 0);

    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(vec![0u8; 900]).file_name("small.wav"));
    let response =
        http.post(format!("{}/v1/jobs", node.base)).bearer_auth(&node.key).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 201);
    node.stop.take().unwrap().send(()).unwrap();
    node.task.await.unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_out_of_the_input_root_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.wav"), b"RIFF").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.wav"), root.path().join("escape.wav")).unwrap();
    std::fs::write(root.path().join("inside.wav"), b"RIFF").unwrap();
    let mut node = start(data.path(), root.path(), 0).await;
    let http = reqwest::Client::new();
    let submit = |path: &str| {
        http.post(format!("{}/v1/jobs", node.base)).bearer_auth(&node.key).json(&json!({ "path": path })).send()
    };
    let escape = submit("escape.wav").await.unwrap();
    assert_eq!(escape.status(), 400);
    let problem: Value = escape.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("outside"), "{problem}");
    assert_eq!(submit("missing.wav").await.unwrap().status(), 400);
    let inside = submit("inside.wav").await.unwrap();
    assert_eq!(inside.status(), 201);

    // Cancelling: a queued job can be cancelled once; a second time is a conflict.
    let id = inside.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let cancel = || http.delete(format!("{}/v1/jobs/{id}", node.base)).bearer_auth(&node.key).send();
    let cancelled: Value = cancel().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancel().await.unwrap().status(), 409);
    node.stop.take().unwrap().send(()).unwrap();
    node.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_and_intake_stops_while_running_jobs_drain() {
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data.path().to_path_buf());
    config.input_roots = vec![root.path().to_path_buf()];
    config.workers = 0;
    let service = Service::open(config).await.unwrap();
    let state = service.state().clone();
    let hasher = Arc::new(KeyHasher::load_or_create(&secret_path(data.path())).unwrap());
    let key = create_key(state.keys.as_ref(), &hasher, &[Scope::Submit], "t").await.unwrap();
    let app = speechmill_server::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum_serve(listener, app).await });
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    state.shutting_down.cancel();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    std::fs::write(root.path().join("a.wav"), b"RIFF").unwrap();
    let refused = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&key.key)
        .json(&json!({ "path": "a.wav" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    drop(service);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(listener, app).await.unwrap();
}
