//! Benchmark (not a test): submissions per second through the real HTTP API, with their p50 and
//! p99 latency, on the embedded default (SQLite in a temporary data folder, every submission
//! durably committed before its 201). JSON submissions name a file under an input root; uploads
//! are measured separately, in MB/s. Client and server share the machine.
//!
//! ```sh
//! cargo run --release -p speechmill-server --example submit_bench -- [REQUESTS] [CONCURRENCY]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::service::secret_path;
use speechmill_server::{Limits, Service, ServiceConfig};

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn hammer(
    requests: usize,
    concurrency: usize,
    send: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>,
) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..concurrency {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for n in (client..requests).step_by(concurrency) {
                let call = Instant::now();
                let response = send(n).send().await.expect("request");
                assert_eq!(response.status(), 201, "{:?}", response.text().await);
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(64);
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("clip.wav"), b"RIFF").unwrap();
    let mut config = ServiceConfig::new(data.path().to_path_buf());
    config.input_roots = vec![root.path().to_path_buf()];
    config.workers = 0;
    config.limits = Limits { max_backlog: u64::MAX / 2, ..Limits::default() };
    let service = Service::open(config).await.unwrap();
    let hasher = KeyHasher::load_or_create(&secret_path(data.path())).unwrap();
    let key = create_key(service.state().keys.as_ref(), &hasher, &[Scope::Submit], "bench").await.unwrap().key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(service.run(Some(listener), async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!(
        "{requests} JSON submissions, {concurrency} concurrent clients, {cores} cores, SQLite (WAL, synchronous=FULL)"
    );

    let (json_http, json_url, json_key) = (http.clone(), format!("{base}/v1/jobs"), key.clone());
    let json_send: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync> = Arc::new(move |n| {
        json_http
            .post(&json_url)
            .bearer_auth(&json_key)
            .header("Idempotency-Key", format!("bench-{n}"))
            .json(&json!({ "path": "clip.wav", "metadata": { "n": n } }))
    });
    let (rate, latencies) = hammer(requests, concurrency, json_send).await;
    println!(
        "json submissions  {rate:>8.0} /s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    let uploads = 200;
    let body = Arc::new(vec![7u8; 1 << 20]);
    let (upload_http, upload_url, upload_key) = (http.clone(), format!("{base}/v1/jobs"), key.clone());
    let upload_send: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync> = Arc::new(move |_| {
        let part = reqwest::multipart::Part::bytes(body.as_ref().clone()).file_name("clip.wav");
        upload_http
            .post(&upload_url)
            .bearer_auth(&upload_key)
            .multipart(reqwest::multipart::Form::new().part("file", part))
    });
    let (rate, latencies) = hammer(uploads, 4, upload_send).await;
    println!(
        "1 MiB uploads     {:>8.1} MB/s ({rate:.0} /s, 4 concurrent)   p50 {:>6.2} ms   p99 {:>6.2} ms",
        rate * (1 << 20) as f64 / 1e6,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    stop.send(()).unwrap();
    node.await.unwrap().unwrap();
}
