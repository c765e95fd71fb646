//! `speechmill-eval`: measures the accuracy of speechmill's measurements against known answers
//! and reference tools (ffmpeg, pyloudnorm, webrtcvad, soxr) and writes `docs/accuracy.md`.
//!
//! Run it through `scripts/eval.sh`, which installs the reference tools first. It is not part of
//! CI: CI runs the fast known-answer unit tests that pin the same measurements.

mod bandwidth;
mod loudness;
mod resampling;
mod signals;
mod snr;
mod tools;
mod vad;
mod wada;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::tools::Tools;

const USAGE: &str = "usage: speechmill-eval --data DIR --work DIR --python PATH --out FILE [--only SECTION]...
sections: loudness, snr, vad, bandwidth, resampling";

/// A section of the report: its name and the function that measures and writes it.
type Section = (&'static str, fn(&Tools) -> Result<String>);

const SECTIONS: [Section; 5] = [
    ("loudness", loudness::run),
    ("snr", snr::run),
    ("vad", vad::run),
    ("bandwidth", bandwidth::run),
    ("resampling", resampling::run),
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut data, mut work, mut python, mut out) = (None, None, None, None);
    let mut only = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--data" => data = Some(PathBuf::from(value()?)),
            "--work" => work = Some(PathBuf::from(value()?)),
            "--python" => python = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--only" => only.push(value()?),
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    let (Some(data), Some(work), Some(python), Some(out)) = (data, work, python, out) else {
        bail!("{USAGE}");
    };
    for name in &only {
        if !SECTIONS.iter().any(|(section, _)| section == name) {
            bail!("unknown section {name}\n{USAGE}");
        }
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let tools = Tools::new(data, work, python)?;
    let mut report = String::from(HEADER);
    report.push_str(&tools.versions()?);
    for (name, run) in SECTIONS {
        if !only.is_empty() && !only.iter().any(|wanted| wanted == name) {
            continue;
        }
        let started = Instant::now();
        eprintln!("speechmill-eval: {name}");
        report.push_str(&run(&tools).with_context(|| format!("section {name}"))?);
        eprintln!("speechmill-eval: {name} took {:.1} s", started.elapsed().as_secs_f64());
    }
    std::fs::write(&out, report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("speechmill-eval: wrote {}", out.display());
    Ok(())
}

const HEADER: &str = "# Accuracy of speechmill's measurements

Every figure below was measured by `speechmill-eval` (crate `crates/speechmill-eval`) on this
repository's real recordings (`testdata/real-speech`, see its `MANIFEST.tsv` and licences) and on
synthesised signals with known answers, side by side with the reference tools people already
trust. Regenerate the whole file with

```sh
scripts/eval.sh            # installs ffmpeg and a Python venv (target/evalenv), builds, runs
```

or one section with `scripts/eval.sh --only snr` (which rewrites the file with that section
alone: run the whole command before committing). CI does not run this evaluation; it runs the
fast known-answer unit tests that pin the same measurements (`cargo test -p speechmill-audio`).

";
