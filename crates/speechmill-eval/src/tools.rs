//! The reference tools: ffmpeg (libavfilter's `ebur128`) and the Python helper
//! (`py/reference.py`: pyloudnorm, webrtcvad, soxr).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Where the material lives and how to reach the reference tools.
pub struct Tools {
    /// `testdata/real-speech`.
    pub data: PathBuf,
    /// Scratch folder for generated files.
    pub work: PathBuf,
    python: PathBuf,
    script: PathBuf,
}

impl Tools {
    /// Checks that the data folder and the tools are there.
    pub fn new(data: PathBuf, work: PathBuf, python: PathBuf) -> Result<Self> {
        if !data.join("MANIFEST.tsv").is_file() {
            bail!("{} has no MANIFEST.tsv", data.display());
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/reference.py");
        Ok(Self { data, work, python, script })
    }

    /// A path in the work folder.
    pub fn work_file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Sends one request to the Python helper and returns its answer.
    pub fn python(&self, request: &Value) -> Result<Value> {
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.python.display()))?;
        child.stdin.take().expect("stdin is piped").write_all(request.to_string().as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("reference.py failed on {}", request["task"]);
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Integrated loudness from ffmpeg's `ebur128` filter (printed to 0.1 LU).
    pub fn ffmpeg_ebur128(&self, file: &Path) -> Result<Option<f64>> {
        let log = ffmpeg_filter_log(file, "ebur128=framelog=verbose")?;
        // The summary's "I:  -23.0 LUFS" line; the last one is the integrated loudness.
        let value = log
            .lines()
            .filter_map(|line| line.trim().strip_prefix("I:"))
            .filter_map(|rest| rest.trim().strip_suffix("LUFS"))
            .next_back()
            .and_then(|number| number.trim().parse::<f64>().ok());
        Ok(value.filter(|v| v.is_finite() && *v > -70.0))
    }

    /// The versions of the reference tools, as a paragraph of the report.
    pub fn versions(&self) -> Result<String> {
        let ffmpeg = Command::new("ffmpeg").arg("-version").output().context("running ffmpeg")?;
        let ffmpeg = String::from_utf8_lossy(&ffmpeg.stdout).lines().next().unwrap_or("").to_owned();
        let python = Command::new(&self.python)
            .args(["-c", "import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) for p in ['pyloudnorm','webrtcvad','soxr','numpy']))"])
            .output()
            .context("running python")?;
        Ok(format!(
            "Reference tools in this run: {}; Python packages {}.\n\n",
            ffmpeg.split(" Copyright").next().unwrap_or(&ffmpeg),
            String::from_utf8_lossy(&python.stdout).trim()
        ))
    }
}

fn ffmpeg_filter_log(file: &Path, filter: &str) -> Result<String> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-nostats", "-i"])
        .arg(file)
        .args(["-af", filter, "-f", "null", "-"])
        .output()
        .context("running ffmpeg")?;
    if !output.status.success() {
        bail!("ffmpeg {filter} failed on {}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Formats an optional number with `decimals` places, or a dash.
pub fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Formats a signed difference with `decimals` places, or a dash.
pub fn fmt_signed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:+.decimals$}"))
}
