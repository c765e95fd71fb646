//! The command line: help, usage errors, configuration layering and exit codes.

mod common;

use common::*;

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let output = speechmill().arg("--help").output().unwrap();
    assert_exit(&output, 0);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("process") && text.contains("Exit codes"), "{text}");
    let output = speechmill().args(["process", "--help"]).output().unwrap();
    assert_exit(&output, 0);
    assert!(String::from_utf8_lossy(&output.stdout).contains("--raw-format"));
}

#[test]
fn bad_usage_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = process(&["no/such/input.wav"], &dir.path().join("out"));
    assert_exit(&missing, 2);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/input.wav"));

    let bad_format = process(&["examples/audio", "--raw-format", "s16le,0,1"], &dir.path().join("out2"));
    assert_exit(&bad_format, 2);

    let no_out = speechmill().args(["process", "examples/audio"]).output().unwrap();
    assert_exit(&no_out, 2);
}

#[test]
fn configuration_layers_defaults_file_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("speechmill.toml");
    std::fs::write(&file, "[standardise]\ntarget_lufs = -20.0\nsample_rate_hz = 22050\n[gate]\nmin_snr_db = 8.0\n")
        .unwrap();
    let output = speechmill()
        .args(["config", "show", "--as", "json", "--config"])
        .arg(&file)
        .env("SPEECHMILL_GATE__MIN_SNR_DB", "12")
        .env("SPEECHMILL_STANDARDISE__SAMPLE_RATE_HZ", "24000")
        .args(["--sample-rate", "8000"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["standardise"]["target_lufs"], -20.0, "from the file");
    assert_eq!(config["gate"]["min_snr_db"], 12.0, "environment over file");
    assert_eq!(config["standardise"]["sample_rate_hz"], 8000, "flag over environment");
    assert_eq!(config["gate"]["max_duration_s"], 60.0, "default");

    let toml = speechmill().args(["config", "show"]).output().unwrap();
    assert_exit(&toml, 0);
    assert!(String::from_utf8_lossy(&toml.stdout).contains("[standardise]"));
}

#[test]
fn an_invalid_configuration_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[standardise]\ntarget_lufs = 5.0\n[gate]\nmin_snr = 3\n").unwrap();
    let output = speechmill().args(["config", "show", "--config"]).arg(&file).output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("min_snr"), "{stderr}");
    let file = dir.path().join("range.toml");
    std::fs::write(&file, "[standardise]\ntarget_lufs = 5.0\n").unwrap();
    let output = speechmill().args(["config", "show", "--config"]).arg(&file).output().unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("target_lufs"));
}
