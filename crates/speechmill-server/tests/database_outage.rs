//! The database goes away and comes back, with the real PostgreSQL on 127.0.0.1:5432 behind a
//! small TCP proxy that the test cuts: the breaker opens, readiness fails, the API refuses with
//! 503 rather than losing work, and everything resumes with no manual step and nothing lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use speechmill_queue::testing::TempPostgres;
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::breaker::{BreakerConfig, BreakerState};
use speechmill_server::service::secret_path;
use speechmill_server::{Limits, Service, ServiceConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new ones refused) and
/// restored.
struct Proxy {
    port: u16,
    /// Set while the proxy is cut; read by every connection task.
    cut: Arc<AtomicBool>,
    /// Wakes every connection task when the proxy is cut.
    cutting: Arc<Notify>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let cutting = Arc::new(Notify::new());
        let (accept_cut, accept_cutting) = (cut.clone(), cutting.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if accept_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cutting = accept_cutting.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cutting.notified() => {}
                    }
                });
            }
        });
        Proxy { port, cut, cutting }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cutting.notify_waiters();
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn speech_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real-speech").canonicalize().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_opens_the_breaker_refuses_work_with_503_and_recovers_without_losing_jobs() {
    let database = TempPostgres::create().await;
    let proxy = Proxy::start(5432).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data.path().to_path_buf());
    config.database_url = Some(database.url_via(proxy.port));
    config.queue.lease = Duration::from_secs(3);
    config.input_roots = vec![speech_root()];
    config.workers = 1;
    config.poll_interval = Duration::from_millis(50);
    config.limits = Limits { database_timeout: Duration::from_secs(1), ..Limits::default() };
    config.breaker = BreakerConfig { open_for: Duration::from_millis(500), min_calls: 3, ..BreakerConfig::default() };
    let service = Service::open(config).await.unwrap();
    let state = service.state().clone();
    let hasher = KeyHasher::load_or_create(&secret_path(data.path())).unwrap();
    let key = create_key(service.state().keys.as_ref(), &hasher, &[Scope::Submit, Scope::Read], "t").await.unwrap().key;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(service.run(Some(listener), async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let submit = |n: usize| {
        http.post(format!("{base}/v1/jobs"))
            .bearer_auth(&key)
            .header("Idempotency-Key", format!("clip-{n}"))
            .json(&json!({ "path": "pocketsphinx-testdata/cards_001.wav", "metadata": { "n": n } }))
            .send()
    };
    let mut accepted = Vec::new();
    let first = submit(0).await.unwrap();
    assert_eq!(first.status(), 201);
    accepted.push(first.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());

    proxy.cut();
    let mut refused = 0;
    for n in 1..=12 {
        let started = Instant::now();
        let response = submit(n).await.unwrap();
        match response.status().as_u16() {
            201 => accepted.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()),
            503 => {
                refused += 1;
                assert!(response.headers().get("retry-after").is_some());
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["type"], "urn:speechmill:problem:unavailable");
                assert!(started.elapsed() < Duration::from_secs(2), "a refusal must not hang");
            }
            other => panic!("unexpected status {other} during the outage"),
        }
    }
    assert!(refused >= 10, "{refused} refusals");
    assert_eq!(state.breakers.database.state(), BreakerState::Open);
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 503);
    // The key was checked before the outage and is cached, so operators can still see why.
    let breakers: Value =
        http.get(format!("{base}/v1/breakers")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(breakers[0]["name"], "database");
    assert_eq!(breakers[0]["state"], "open", "{breakers}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http.get(format!("{base}/readyz")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "readiness never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While the breaker is half-open only its trial calls go through; a client that honours
    // Retry-After gets in as soon as it closes.
    for n in 13..=14 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = submit(n).await.unwrap();
            if response.status() == 201 {
                accepted.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
                break;
            }
            assert_eq!(response.status(), 503);
            assert!(Instant::now() < deadline, "submissions never resumed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every accepted job finishes; none is lost.
    for id in &accepted {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job: Value =
                http.get(format!("{base}/v1/jobs/{id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
            if job["state"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never finished: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(state.breakers.database.state(), BreakerState::Closed);
    let all: Value = http.get(format!("{base}/v1/jobs")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["jobs"].as_array().unwrap().len(), accepted.len());
    stop.send(()).unwrap();
    node.await.unwrap().unwrap();
}
