//! Benchmark (not a test): queue overhead per backend, with no audio work. Enqueues N jobs one
//! at a time from C concurrent producers, then has C concurrent workers claim and complete them
//! until the queue is empty, and prints jobs per second for each phase, with per-call p50/p99.
//!
//! ```sh
//! cargo run --release -p speechmill-queue --example queue_overhead -- [JOBS] [CONCURRENCY]
//! ```
//!
//! SQLite runs on a file in a temporary folder (WAL, synchronous=FULL: every commit is durable);
//! PostgreSQL runs in a temporary database on 127.0.0.1:5432. Each runs with group commit (the
//! default) and without, in the same run, so the two can be compared on a noisy machine. Each runs with group commit (the
//! default) and without, in the same run, so the two can be compared on a noisy machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use speechmill_queue::testing::TempPostgres;
use speechmill_queue::{FastRandom, JobQueue, NewJob, PostgresQueue, QueueConfig, SqliteQueue, SystemClock};

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn run(name: &str, queue: Arc<dyn JobQueue>, jobs: usize, concurrency: usize) {
    // Enqueue, one job per call (one transaction each), from `concurrency` producers.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for producer in 0..concurrency {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for n in (producer..jobs).step_by(concurrency) {
                let call = Instant::now();
                let job = NewJob {
                    payload: json!({ "source": { "kind": "path", "path": format!("/data/in/{n}.wav") } }),
                    idempotency_key: Some(format!("bench-{n}")),
                    ..NewJob::default()
                };
                queue.enqueue(job).await.expect("enqueue");
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let enqueue_rate = jobs as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{name:<20} enqueue          {enqueue_rate:>8.0} jobs/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // Claim + complete until empty, from `concurrency` workers.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("bench-{worker}");
            let mut latencies = Vec::new();
            loop {
                let call = Instant::now();
                let Some(lease) = queue.claim(&owner).await.expect("claim") else { break };
                queue.complete(&lease, json!({ "id": lease.job.id })).await.expect("complete");
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    assert_eq!(latencies.len(), jobs, "every job claimed and completed exactly once");
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{name:<20} claim + complete {rate:>8.0} jobs/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(5000);
    let concurrency: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(8);
    println!(
        "{jobs} jobs, {concurrency} concurrent producers / workers, {} cores",
        std::thread::available_parallelism().map(usize::from).unwrap_or(1)
    );

    for group_commit in [true, false] {
        let config = QueueConfig { group_commit: Some(group_commit), ..QueueConfig::default() };
        let suffix = if group_commit { "grouped" } else { "per call" };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite");
        let sqlite =
            SqliteQueue::open(&path, config.clone(), Arc::new(SystemClock), Arc::new(FastRandom)).await.unwrap();
        run(&format!("sqlite, {suffix}"), Arc::new(sqlite), jobs, concurrency).await;

        let database = TempPostgres::create().await;
        let postgres =
            PostgresQueue::connect(&database.url(), config, Arc::new(SystemClock), Arc::new(FastRandom)).await.unwrap();
        run(&format!("postgres, {suffix}"), Arc::new(postgres), jobs, concurrency).await;
    }
}
