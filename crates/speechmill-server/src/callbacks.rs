//! Outbound callbacks: a job submitted with a `callback_url` (only to configured hosts) has its
//! final state POSTed there, as the job's JSON. Due callbacks live in the queue database, so they
//! survive restarts; a sender claims a few at a time for a while, delivers them through the
//! callbacks circuit breaker with a timeout, and records each delivery or failure (retried with
//! backoff, given up after a number of attempts). Delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use speechmill_queue::{CallbackTask, JobQueue};
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::error::ApiError;
use crate::model::JobView;

/// How callbacks are sent.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// Hosts that callback URLs may name (exact, case-insensitive); none: callbacks are refused.
    pub allowed_hosts: Vec<String>,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Deliveries tried before a callback is given up.
    pub max_attempts: u32,
    /// How often the sender looks for due callbacks.
    pub poll_interval: Duration,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            allowed_hosts: Vec::new(),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Checks a submitted callback URL: http or https, to an allowed host, no credentials.
pub fn check_url(url: &str, allowed_hosts: &[String]) -> Result<String, ApiError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|err| ApiError::BadRequest(format!("invalid callback_url: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::BadRequest("callback_url must be http or https".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::BadRequest("callback_url must not carry credentials".into()));
    }
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    if !allowed_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(&host)) {
        return Err(ApiError::BadRequest(format!("callbacks to {host:?} are not allowed on this service")));
    }
    Ok(parsed.to_string())
}

/// Sends due callbacks until `stop` is cancelled.
pub async fn run_sender(
    queue: Arc<dyn JobQueue>,
    breaker: Arc<Breaker>,
    settings: CallbackSettings,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder().timeout(settings.timeout).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the callback client; callbacks are not sent");
            return;
        }
    };
    // A claim outlives every delivery of the batch, so no other sender takes them meanwhile.
    let hold = settings.timeout * 16 + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
        if breaker.allow().is_err() {
            continue;
        }
        let tasks = match queue.claim_callbacks(16, hold).await {
            Ok(tasks) => tasks,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read due callbacks");
                continue;
            }
        };
        for task in tasks {
            deliver(&queue, &breaker, &client, &task, settings.max_attempts).await;
        }
    }
}

async fn deliver(
    queue: &Arc<dyn JobQueue>,
    breaker: &Breaker,
    client: &reqwest::Client,
    task: &CallbackTask,
    max_attempts: u32,
) {
    let body = JobView::from(&task.job);
    let outcome = match breaker.allow() {
        Err(_) => Err("the callbacks circuit breaker is open".to_string()),
        Ok(()) => match client.post(&task.url).json(&body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the receiver answered {}", response.status())),
            Err(err) => Err(format!("cannot reach the receiver: {}", err.without_url())),
        },
    };
    let recorded = match &outcome {
        Ok(()) => {
            breaker.record(true);
            metrics::counter!(crate::telemetry::metrics::CALLBACKS, "outcome" => "delivered").increment(1);
            queue.callback_delivered(task).await
        }
        Err(error) => {
            breaker.record(false);
            metrics::counter!(crate::telemetry::metrics::CALLBACKS, "outcome" => "failed").increment(1);
            tracing::warn!(job.id = %task.job.id, error = %error, "callback not delivered");
            queue.callback_failed(task, error, max_attempts).await
        }
    };
    if let Err(err) = recorded {
        tracing::warn!(job.id = %task.job.id, error = %err, "cannot record a callback delivery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_hosts_over_http_without_credentials_are_taken() {
        let allowed = vec!["hooks.example".to_string()];
        assert!(check_url("https://hooks.example/done", &allowed).is_ok());
        assert!(check_url("http://HOOKS.example:8080/x", &allowed).is_ok());
        assert!(check_url("https://evil.example/done", &allowed).is_err());
        assert!(check_url("https://user:pw@hooks.example/", &allowed).is_err());
        assert!(check_url("file:///etc/passwd", &allowed).is_err());
        assert!(check_url("not a url", &allowed).is_err());
        assert!(check_url("https://hooks.example/", &[]).is_err());
    }
}
