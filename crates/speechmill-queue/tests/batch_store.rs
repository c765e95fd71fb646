//! The batch store against a real SQLite file: registration, resume and final outcomes.

use serde_json::json;
use speechmill_queue::batch::Finished;
use speechmill_queue::{BatchStore, JobSpec, JobState, QueueError};

fn specs(n: usize) -> Vec<JobSpec> {
    (0..n)
        .map(|i| JobSpec {
            id: format!("clip-{i}"),
            seq: i as i64,
            source: format!("in/{i}.wav"),
            spec: json!({ "path": format!("in/{i}.wav") }),
        })
        .collect()
}

#[tokio::test]
async fn a_reopened_store_resumes_only_unfinished_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.sqlite");
    let store = BatchStore::open(&path).await.unwrap();
    assert_eq!(store.register(&specs(5)).await.unwrap(), 5);
    store
        .finish(&[Finished {
            id: "clip-1".into(),
            state: JobState::Succeeded,
            result: json!({ "id": "clip-1" }),
            reason: None,
            content_hash: Some("abc".into()),
        }])
        .await
        .unwrap();
    store.close().await;

    let reopened = BatchStore::open(&path).await.unwrap();
    assert_eq!(reopened.register(&specs(5)).await.unwrap(), 0, "same inputs register nothing new");
    let left: Vec<String> = reopened.unfinished().await.unwrap().into_iter().map(|job| job.id).collect();
    assert_eq!(left, ["clip-0", "clip-2", "clip-3", "clip-4"]);
    let all = reopened.all().await.unwrap();
    assert_eq!(all[1].state, JobState::Succeeded);
    assert_eq!(all[1].attempts, 1);
    assert_eq!(all[1].content_hash.as_deref(), Some("abc"));
    assert_eq!(all[1].result, Some(json!({ "id": "clip-1" })));
}

#[tokio::test]
async fn a_store_refuses_a_different_set_of_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = BatchStore::open(&dir.path().join("run.sqlite")).await.unwrap();
    store.register(&specs(3)).await.unwrap();
    let err = store.register(&specs(4)).await.unwrap_err();
    assert!(matches!(err, QueueError::Conflict(_)), "{err}");
}

#[tokio::test]
async fn run_facts_are_kept_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = BatchStore::open(&dir.path().join("run.sqlite")).await.unwrap();
    assert_eq!(store.meta("config_hash").await.unwrap(), None);
    store.set_meta("config_hash", "one").await.unwrap();
    store.set_meta("config_hash", "two").await.unwrap();
    assert_eq!(store.meta("config_hash").await.unwrap().as_deref(), Some("two"));
}

#[tokio::test]
async fn pages_cover_every_job_once_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = BatchStore::open(&dir.path().join("run.sqlite")).await.unwrap();
    store.register(&specs(7)).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.page(after, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seen.extend(page.into_iter().map(|job| job.id));
    }
    let expected: Vec<String> = (0..7).map(|i| format!("clip-{i}")).collect();
    assert_eq!(seen, expected);
    store.close().await;
}
