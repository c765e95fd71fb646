//! Fuzzes the streaming decoder: `StreamDecoder::open` on arbitrary bytes, then every block.
//!
//! Any escaping panic, hang, or allocation beyond libFuzzer's limits is a finding. Panics inside
//! symphonia are caught by the decoder itself (they become `decode_error`), as in production;
//! set `SPEECHMILL_FUZZ_STRICT_PANICS=1` to report those too.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use speechmill_audio::decode::{RawEncoding, RawFormat, StreamDecoder};

fuzz_target!(
    init: {
        if std::env::var_os("SPEECHMILL_FUZZ_STRICT_PANICS").is_none() {
            // libfuzzer-sys aborts on every panic, even one the decoder catches; production
            // catches those, so only panics that escape `fuzz_target` (it aborts on them) count.
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| {
        // The first byte chooses whether a raw format is given (as `--raw-format` would).
        let (selector, bytes) = match data.split_first() {
            Some((&selector, rest)) => (selector, rest),
            None => (0, data),
        };
        let raw = (selector & 1 == 1).then(|| RawFormat {
            encoding: RawEncoding::ALL[usize::from(selector >> 1) % RawEncoding::ALL.len()],
            sample_rate: 16_000,
            channels: 1 + u16::from(selector >> 5),
        });
        let source = Box::new(Cursor::new(bytes.to_vec()));
        let Ok(mut decoder) = StreamDecoder::open(source, raw) else {
            return;
        };
        let info = decoder.info().clone();
        assert!(info.sample_rate > 0, "open succeeded with sample rate 0");
        assert!(info.channels > 0, "open succeeded with 0 channels");
        let channels = usize::from(info.channels);
        while let Ok(Some(block)) = decoder.next_block() {
            assert_eq!(block.len() % channels, 0, "block is not a whole number of frames");
        }
    }
);
