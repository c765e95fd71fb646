//! Writes small datasets with `write_parquet_shards` and reads them back with the `parquet`
//! crate's reader; when `SPEECHMILL_PYTHON` names a Python with `datasets` and `soundfile`,
//! also loads them with Hugging Face `datasets` through `tests/check_hf_dataset.py`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use parquet::basic::{ConvertedType, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Map, Value, json};
use speechmill_audio::encode::encode_flac_16;
use speechmill_pipeline::dataset::{DatasetError, ParquetOptions, write_parquet_shards};

const SAMPLE_RATE: u32 = 16_000;

/// A sine of `frequency_hz` at -12 dBFS lasting `sample_count` samples.
fn sine(frequency_hz: f32, sample_count: usize) -> Vec<f32> {
    (0..sample_count)
        .map(|n| 0.25 * (2.0 * std::f32::consts::PI * frequency_hz * n as f32 / SAMPLE_RATE as f32).sin())
        .collect()
}

fn frequency_hz(index: usize) -> usize {
    300 + 20 * index
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test rows are objects, got {other}"),
    }
}

/// Five clips of different lengths, their FLAC bytes, and rows with a column of every kind:
/// string, float64, int64, bool, JSON text, and a key missing or null in some rows.
fn clips() -> (Vec<Map<String, Value>>, Vec<Vec<u8>>) {
    // Close frequencies and lengths so that any two clips hold more bytes than the largest one.
    let sample_counts = [16_000, 12_000, 20_000, 11_000, 12_345];
    let mut rows = Vec::new();
    let mut flacs = Vec::new();
    for (index, &sample_count) in sample_counts.iter().enumerate() {
        let flac = encode_flac_16(&sine(frequency_hz(index) as f32, sample_count), SAMPLE_RATE).expect("flac encodes");
        let mut row = object(json!({
            "id": format!("clip{index}"),
            "audio_path": format!("input/speaker{}/clip{index}.wav", index % 2),
            "duration_s": sample_count as f64 / f64::from(SAMPLE_RATE),
            "num_samples": sample_count,
            "passed": index % 2 == 0,
            "tags": ["sine", {"hz": frequency_hz(index)}],
        }));
        if index != 2 {
            row.insert("speaker".to_owned(), json!(format!("s{}", index % 2)));
        }
        if index == 4 {
            row.insert("speaker".to_owned(), Value::Null);
            row.insert("note".to_owned(), json!("last"));
        }
        rows.push(row);
        flacs.push(flac);
    }
    (rows, flacs)
}

fn options(max_shard_bytes: u64) -> ParquetOptions {
    ParquetOptions { sampling_rate: SAMPLE_RATE, max_shard_bytes, split: "train".to_owned() }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every row of the shards, in order, as (column name, field) pairs.
fn read_rows(shards: &[PathBuf]) -> Vec<Vec<(String, Field)>> {
    let mut rows = Vec::new();
    for shard in shards {
        let reader = SerializedFileReader::new(File::open(shard).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            rows.push(row.get_column_iter().map(|(name, field)| (name.clone(), field.clone())).collect());
        }
    }
    rows
}

fn field<'a>(row: &'a [(String, Field)], name: &str) -> &'a Field {
    &row.iter().find(|(column, _)| column == name).unwrap_or_else(|| panic!("no column {name}")).1
}

fn text(value: &str) -> Field {
    Field::Str(value.to_owned())
}

#[test]
fn shards_hold_every_row_with_inferred_types_and_hf_metadata() {
    let (rows, flacs) = clips();
    let out_dir = tempfile::tempdir().unwrap();
    let data_dir = out_dir.path().join("data");
    fs::create_dir_all(&data_dir).unwrap();
    // Left by an earlier run: a shard of this split (removed), a shard of another split and a
    // split whose name starts with this one (kept), a partial file (removed).
    for stale in [
        "train-00000-of-00009.parquet",
        ".train-00001.parquet.partial",
        "test-00000-of-00001.parquet",
        "train-clean-00000-of-00001.parquet",
    ] {
        fs::write(data_dir.join(stale), b"stale").unwrap();
    }

    // Just above the largest clip: every shard closes at its second clip, giving 2, 2 and 1 rows.
    let max_shard_bytes = flacs.iter().map(Vec::len).max().unwrap() as u64 + 1;
    assert!((flacs[0].len() + flacs[1].len()) as u64 >= max_shard_bytes);
    assert!((flacs[2].len() + flacs[3].len()) as u64 >= max_shard_bytes);
    let mut requested = Vec::new();
    let shards = write_parquet_shards(
        out_dir.path(),
        &rows,
        &mut |index| {
            requested.push(index);
            Ok(flacs[index].clone())
        },
        &options(max_shard_bytes),
    )
    .unwrap();

    assert_eq!(requested, [0, 1, 2, 3, 4], "each clip's audio is fetched once, in order");
    assert_eq!(
        file_names(&data_dir),
        [
            "test-00000-of-00001.parquet",
            "train-00000-of-00003.parquet",
            "train-00001-of-00003.parquet",
            "train-00002-of-00003.parquet",
            "train-clean-00000-of-00001.parquet",
        ]
    );
    assert_eq!(shards.len(), 3);
    let rows_per_shard: Vec<i64> = shards
        .iter()
        .map(|shard| {
            SerializedFileReader::new(File::open(shard).unwrap()).unwrap().metadata().file_metadata().num_rows()
        })
        .collect();
    assert_eq!(rows_per_shard, [2, 2, 1]);

    // Schema: audio first, then the keys in order of first appearance, with inferred types.
    let reader = SerializedFileReader::new(File::open(&shards[0]).unwrap()).unwrap();
    let file_metadata = reader.metadata().file_metadata();
    let schema = file_metadata.schema_descr();
    let leaves: Vec<(String, PhysicalType, ConvertedType)> = (0..schema.num_columns())
        .map(|index| {
            let column = schema.column(index);
            (column.path().string(), column.physical_type(), column.converted_type())
        })
        .collect();
    let expected_leaves = [
        ("audio.bytes", PhysicalType::BYTE_ARRAY, ConvertedType::NONE),
        ("audio.path", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        ("id", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        ("audio_path", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        ("duration_s", PhysicalType::DOUBLE, ConvertedType::NONE),
        ("num_samples", PhysicalType::INT64, ConvertedType::NONE),
        ("passed", PhysicalType::BOOLEAN, ConvertedType::NONE),
        ("tags", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        ("speaker", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        ("note", PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
    ];
    let expected_leaves: Vec<(String, PhysicalType, ConvertedType)> =
        expected_leaves.iter().map(|(name, physical, converted)| (name.to_string(), *physical, *converted)).collect();
    assert_eq!(leaves, expected_leaves);

    let huggingface = file_metadata
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|pair| pair.key == "huggingface"))
        .and_then(|pair| pair.value.clone())
        .expect("huggingface metadata");
    let expected_features = json!({
        "audio": {"_type": "Audio", "sampling_rate": 16000},
        "id": {"dtype": "string", "_type": "Value"},
        "audio_path": {"dtype": "string", "_type": "Value"},
        "duration_s": {"dtype": "float64", "_type": "Value"},
        "num_samples": {"dtype": "int64", "_type": "Value"},
        "passed": {"dtype": "bool", "_type": "Value"},
        "tags": {"dtype": "string", "_type": "Value"},
        "speaker": {"dtype": "string", "_type": "Value"},
        "note": {"dtype": "string", "_type": "Value"},
    });
    let metadata: Value = serde_json::from_str(&huggingface).unwrap();
    assert_eq!(metadata, json!({"info": {"features": expected_features}}));
    let feature_order: Vec<&String> = metadata["info"]["features"].as_object().unwrap().keys().collect();
    let column_order: Vec<&String> = expected_features.as_object().unwrap().keys().collect();
    assert_eq!(feature_order, column_order, "features in column order");

    // Values, row by row.
    let read = read_rows(&shards);
    assert_eq!(read.len(), rows.len());
    for (index, (row, source)) in read.iter().zip(&rows).enumerate() {
        let Field::Group(audio) = field(row, "audio") else {
            panic!("row {index}: audio is not a struct");
        };
        let audio: Vec<(&String, &Field)> = audio.get_column_iter().collect();
        assert_eq!(audio.len(), 2);
        assert_eq!(audio[0].0, "bytes");
        assert!(
            matches!(audio[0].1, Field::Bytes(bytes) if bytes.data() == flacs[index].as_slice()),
            "row {index}: audio bytes are the clip's FLAC"
        );
        assert_eq!((audio[1].0.as_str(), audio[1].1), ("path", &text(&format!("clip{index}.wav"))));

        assert_eq!(field(row, "id"), &text(&format!("clip{index}")));
        assert_eq!(field(row, "audio_path"), &text(source["audio_path"].as_str().unwrap()));
        assert_eq!(field(row, "duration_s"), &Field::Double(source["duration_s"].as_f64().unwrap()));
        assert_eq!(field(row, "num_samples"), &Field::Long(source["num_samples"].as_i64().unwrap()));
        assert_eq!(field(row, "passed"), &Field::Bool(index % 2 == 0));
        let tags = format!(r#"["sine",{{"hz":{}}}]"#, frequency_hz(index));
        assert_eq!(field(row, "tags"), &text(&tags));
        let speaker = match index {
            2 | 4 => Field::Null, // missing, then null
            _ => text(&format!("s{}", index % 2)),
        };
        assert_eq!(field(row, "speaker"), &speaker, "row {index}");
        let note = if index == 4 { text("last") } else { Field::Null };
        assert_eq!(field(row, "note"), &note, "row {index}");
    }

    // The other splits' files were placeholders, not Parquet: the checker loads data/*.parquet.
    fs::remove_file(data_dir.join("test-00000-of-00001.parquet")).unwrap();
    fs::remove_file(data_dir.join("train-clean-00000-of-00001.parquet")).unwrap();
    check_with_hf_datasets(out_dir.path(), rows.len());
}

#[test]
fn a_second_run_replaces_the_shards_of_the_first() {
    let (rows, flacs) = clips();
    let out_dir = tempfile::tempdir().unwrap();
    let first =
        write_parquet_shards(out_dir.path(), &rows, &mut |index| Ok(flacs[index].clone()), &options(1)).unwrap();
    assert_eq!(first.len(), rows.len(), "one row per shard when every clip reaches the limit");

    let second =
        write_parquet_shards(out_dir.path(), &rows[..3], &mut |index| Ok(flacs[index].clone()), &options(u64::MAX))
            .unwrap();
    assert_eq!(second, [out_dir.path().join("data/train-00000-of-00001.parquet")]);
    assert_eq!(file_names(&out_dir.path().join("data")), ["train-00000-of-00001.parquet"]);
    assert_eq!(read_rows(&second).len(), 3);
}

#[test]
fn no_rows_still_give_one_loadable_shard() {
    let out_dir = tempfile::tempdir().unwrap();
    let shards =
        write_parquet_shards(out_dir.path(), &[], &mut |_| unreachable!("no rows, no audio"), &options(1 << 20))
            .unwrap();
    assert_eq!(shards, [out_dir.path().join("data/train-00000-of-00001.parquet")]);
    assert!(read_rows(&shards).is_empty());
}

#[test]
fn failing_audio_leaves_the_earlier_shards_and_no_partial_files() {
    let (rows, flacs) = clips();
    let out_dir = tempfile::tempdir().unwrap();
    let earlier =
        write_parquet_shards(out_dir.path(), &rows[..1], &mut |index| Ok(flacs[index].clone()), &options(1)).unwrap();

    let error = write_parquet_shards(
        out_dir.path(),
        &rows,
        &mut |index| {
            if index == 3 {
                return Err(std::io::Error::other("clip vanished"));
            }
            Ok(flacs[index].clone())
        },
        &options(1),
    )
    .unwrap_err();
    match error {
        DatasetError::Io { path, .. } => assert_eq!(path, Path::new("input/speaker1/clip3.wav")),
        other => panic!("expected an i/o error naming the clip, got {other}"),
    }
    assert_eq!(file_names(&out_dir.path().join("data")), ["train-00000-of-00001.parquet"]);
    assert_eq!(read_rows(&earlier).len(), 1);
}

/// Loads the dataset with Hugging Face `datasets` when `SPEECHMILL_PYTHON` is set, and checks
/// that the checker also fails when it should (wrong row count).
fn check_with_hf_datasets(dataset_dir: &Path, row_count: usize) {
    let Some(python) = std::env::var_os("SPEECHMILL_PYTHON") else {
        eprintln!(
            "skipped the Hugging Face datasets check: set SPEECHMILL_PYTHON to a Python with \
             datasets and soundfile installed"
        );
        return;
    };
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_hf_dataset.py");
    let run = |expected_rows: usize| {
        Command::new(&python)
            .arg(&checker)
            .arg(dataset_dir)
            .arg(expected_rows.to_string())
            .output()
            .expect("the Python in SPEECHMILL_PYTHON runs")
    };
    let output = run(row_count);
    assert!(
        output.status.success(),
        "check_hf_dataset.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stdout).trim_end());

    let wrong = run(row_count + 1);
    assert!(!wrong.status.success(), "check_hf_dataset.py accepted a wrong row count");
}
