//! A `speechmill serve` or `worker` process for end-to-end tests, and HTTP helpers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// A running `speechmill serve` or `worker`, killed if the test ends early.
pub struct Node {
    pub child: Child,
    /// `http://ADDR` of a `serve` node.
    base: Option<String>,
    /// Everything it wrote to standard error; appended by the thread draining the pipe.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Node {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut command = speechmill();
        command.args(args).stdout(Stdio::null()).stderr(Stdio::piped()).current_dir(repo());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start speechmill");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Text lines say "speechmill: listening on ADDR"; JSON lines carry the same
                // words in their `message`.
                let message = match serde_json::from_str::<Value>(&line) {
                    Ok(object) => object["message"].as_str().map(str::to_string),
                    Err(_) => line.strip_prefix("speechmill: ").map(str::to_string),
                };
                if let Some(address) = message.as_deref().and_then(|text| text.strip_prefix("listening on ")) {
                    let _ = sender.send(address.trim().to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let base = if args[0] == "serve" {
            Some(receiver.recv_timeout(Duration::from_secs(30)).expect("serve printed its address"))
        } else {
            None
        };
        Node { child, base, lines }
    }

    /// The lines the node has written to standard error so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_deref().expect("a serve node"))
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let status = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the node did not stop within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a key with these scopes through the binary; the key is the last line of stdout.
pub fn create_key(data: &Path, scopes: &str) -> String {
    let output = speechmill().args(["keys", "create", "--scopes", scopes, "--data-dir"]).arg(data).output().unwrap();
    assert_exit(&output, 0);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout.lines().last().unwrap().to_string();
    assert!(key.starts_with("smk_"), "{stdout:?}");
    key
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

pub async fn get_job(node: &Node, key: &str, id: &str) -> Value {
    let response = client().get(node.url(&format!("/v1/jobs/{id}"))).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls a job until `done` holds, or panics after `within`.
pub async fn wait_for(node: &Node, key: &str, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job = get_job(node, key, id).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never reached the expected state: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn speech_clip() -> PathBuf {
    repo().join("testdata/real-speech/pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav")
}
