//! Callbacks end to end: a real clip is processed, and its final state is POSTed to a receiver
//! on 127.0.0.1 that fails the first delivery; the retry delivers it, exactly as the job is.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::service::secret_path;
use speechmill_server::{Limits, Service, ServiceConfig};

/// What the receiver saw: every body, in order.
type Seen = Arc<Mutex<Vec<Value>>>;

async fn receive(State(seen): State<Seen>, Json(body): Json<Value>) -> StatusCode {
    let mut seen = seen.lock().unwrap();
    seen.push(body);
    // The first delivery fails, as a receiver that is briefly down would.
    if seen.len() == 1 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_job_is_posted_to_its_callback_and_a_failed_delivery_is_retried() {
    let seen: Seen = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", post(receive)).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await.unwrap() });

    let data = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real-speech").canonicalize().unwrap();
    let mut config = ServiceConfig::new(data.path().to_path_buf());
    config.input_roots = vec![root];
    config.workers = 1;
    config.poll_interval = Duration::from_millis(50);
    config.limits = Limits { callback_hosts: vec!["127.0.0.1".into()], ..Limits::default() };
    config.callbacks.poll_interval = Duration::from_millis(50);
    let service = Service::open(config).await.unwrap();
    let hasher = KeyHasher::load_or_create(&secret_path(data.path())).unwrap();
    let key = create_key(service.state().keys.as_ref(), &hasher, &[Scope::Submit, Scope::Read], "t").await.unwrap().key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(service.run(Some(listener), async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    let refused = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "path": "alsa-utils/Front_Left.wav", "callback_url": "http://elsewhere.example/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let created: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "path": "alsa-utils/Front_Left.wav", "callback_url": hook }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["callback"]["state"], "pending");

    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job: Value =
            http.get(format!("{base}/v1/jobs/{id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if job["callback"]["state"] == "delivered" {
            break job;
        }
        assert!(Instant::now() < deadline, "callback never delivered: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["callback"]["attempts"], 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed delivery, one retry");
    assert_eq!(seen[1]["id"], id.as_str());
    assert_eq!(seen[1]["state"], "succeeded");
    assert!((seen[1]["result"]["duration_s"].as_f64().unwrap() - 1.480).abs() < 0.01, "{}", seen[1]);

    stop.send(()).unwrap();
    node.await.unwrap().unwrap();
}
