//! The standardised signal of one clip: held in memory up to a limit, spilled to an unnamed
//! scratch file beyond it, so that memory does not grow with the length of the clip.
//!
//! Loudness normalisation needs the whole clip's loudness before it can apply one gain, so the
//! 16 kHz mono signal has to be kept until the end of the clip. Short clips (the common case)
//! stay in memory; a two-hour recording goes to disk as raw `f32` and is read back in chunks for
//! the speech analysis and the encoding passes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes per stored sample (`f32`, little-endian).
const SAMPLE_BYTES: usize = 4;

/// A growing mono signal, in memory or in a scratch file.
pub struct SampleStore {
    /// The samples while they fit under `memory_limit`; empty once spilled.
    memory: Vec<f32>,
    /// The scratch file once the signal outgrew memory; it holds every sample in order.
    spill: Option<BufWriter<File>>,
    /// Samples held in all.
    len: u64,
    /// Most samples kept in memory.
    memory_limit: usize,
    /// Where the scratch file is made.
    scratch_dir: PathBuf,
    /// Reused conversion buffer for writes.
    bytes: Vec<u8>,
}

impl SampleStore {
    /// A store that keeps up to `memory_limit` samples in memory and spills to an unnamed file
    /// in `scratch_dir` (deleted when the store is dropped, even if the process dies) beyond.
    pub fn new(memory_limit: usize, scratch_dir: &Path) -> Self {
        Self {
            memory: Vec::new(),
            spill: None,
            len: 0,
            memory_limit,
            scratch_dir: scratch_dir.to_path_buf(),
            bytes: Vec::new(),
        }
    }

    /// Samples held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the signal went to the scratch file.
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// The samples, when they are all in memory.
    pub fn in_memory(&self) -> Option<&[f32]> {
        self.spill.is_none().then_some(self.memory.as_slice())
    }

    /// The folder scratch files go to.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }

    /// Appends samples, spilling everything to the scratch file once the limit is passed.
    ///
    /// # Errors
    ///
    /// The scratch file could not be made or written.
    pub fn extend(&mut self, samples: &[f32]) -> io::Result<()> {
        self.len += samples.len() as u64;
        if self.spill.is_none() {
            let needed = self.memory.len() + samples.len();
            if needed <= self.memory_limit {
                if needed > self.memory.capacity() {
                    // Grow by doubling, but never past the limit: a doubled buffer would hold
                    // up to twice the limit just before spilling.
                    let target = needed.max(self.memory.capacity() * 2).min(self.memory_limit);
                    self.memory.reserve_exact(target - self.memory.len());
                }
                self.memory.extend_from_slice(samples);
                return Ok(());
            }
            let file = tempfile::tempfile_in(&self.scratch_dir)?;
            let mut writer = BufWriter::with_capacity(1 << 16, file);
            let memory = std::mem::take(&mut self.memory);
            write_samples(&mut writer, &memory, &mut self.bytes)?;
            self.spill = Some(writer);
        }
        match self.spill.as_mut() {
            Some(writer) => write_samples(writer, samples, &mut self.bytes),
            None => Ok(()),
        }
    }

    /// Reads the signal from the start in chunks of at most `chunk_len` samples.
    ///
    /// # Errors
    ///
    /// The scratch file could not be flushed or rewound.
    pub fn chunks(&mut self, chunk_len: usize) -> io::Result<Chunks<'_>> {
        let chunk_len = chunk_len.max(1);
        let source = match self.spill.as_mut() {
            None => ChunkSource::Memory { samples: &self.memory, offset: 0 },
            Some(writer) => {
                writer.flush()?;
                let mut file = writer.get_ref().try_clone()?;
                file.seek(SeekFrom::Start(0))?;
                ChunkSource::File {
                    reader: BufReader::with_capacity(1 << 16, file),
                    left: self.len,
                    bytes: Vec::new(),
                    samples: Vec::new(),
                }
            }
        };
        Ok(Chunks { source, chunk_len })
    }
}

/// Samples converted to bytes at a time when writing (keeps the conversion buffer small).
const WRITE_CHUNK: usize = 1 << 14;

fn write_samples(writer: &mut impl Write, samples: &[f32], bytes: &mut Vec<u8>) -> io::Result<()> {
    for chunk in samples.chunks(WRITE_CHUNK) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|sample| sample.to_le_bytes()));
        writer.write_all(bytes)?;
    }
    Ok(())
}

/// A reader over a [`SampleStore`], chunk by chunk.
pub struct Chunks<'a> {
    source: ChunkSource<'a>,
    chunk_len: usize,
}

enum ChunkSource<'a> {
    Memory {
        samples: &'a [f32],
        /// Samples already handed out.
        offset: usize,
    },
    File {
        reader: BufReader<File>,
        /// Samples not read yet.
        left: u64,
        /// Reused buffers for one chunk.
        bytes: Vec<u8>,
        samples: Vec<f32>,
    },
}

impl Chunks<'_> {
    /// The next chunk, or `None` at the end.
    ///
    /// # Errors
    ///
    /// The scratch file could not be read (or was shorter than what was written to it).
    pub fn next_chunk(&mut self) -> io::Result<Option<&[f32]>> {
        match &mut self.source {
            ChunkSource::Memory { samples, offset } => {
                if *offset >= samples.len() {
                    return Ok(None);
                }
                let end = samples.len().min(*offset + self.chunk_len);
                let chunk = &samples[*offset..end];
                *offset = end;
                Ok(Some(chunk))
            }
            ChunkSource::File { reader, left, bytes, samples } => {
                if *left == 0 {
                    return Ok(None);
                }
                let take = (*left).min(self.chunk_len as u64) as usize;
                bytes.resize(take * SAMPLE_BYTES, 0);
                reader.read_exact(bytes)?;
                samples.clear();
                samples.extend(bytes.chunks_exact(SAMPLE_BYTES).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
                *left -= take as u64;
                Ok(Some(samples.as_slice()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize) -> Vec<f32> {
        (0..len).map(|n| n as f32 * 0.001).collect()
    }

    fn read_all(store: &mut SampleStore, chunk_len: usize) -> Vec<f32> {
        let mut chunks = store.chunks(chunk_len).unwrap();
        let mut all = Vec::new();
        while let Some(chunk) = chunks.next_chunk().unwrap() {
            assert!(chunk.len() <= chunk_len);
            all.extend_from_slice(chunk);
        }
        all
    }

    #[test]
    fn short_signals_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SampleStore::new(100, dir.path());
        store.extend(&ramp(60)).unwrap();
        store.extend(&ramp(40)).unwrap();
        assert!(!store.is_spilled());
        assert_eq!(store.len(), 100);
        assert_eq!(store.in_memory().unwrap().len(), 100);
        assert!(store.memory.capacity() <= 100, "never allocates past the limit");
        let all = read_all(&mut store, 30);
        assert_eq!(all.len(), 100);
        assert_eq!(all[60..], ramp(40)[..]);
    }

    #[test]
    fn long_signals_spill_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SampleStore::new(100, dir.path());
        let signal = ramp(1000);
        for piece in signal.chunks(77) {
            store.extend(piece).unwrap();
        }
        assert!(store.is_spilled());
        assert!(store.in_memory().is_none());
        assert_eq!(store.len(), 1000);
        assert_eq!(read_all(&mut store, 128), signal);
        // Reading twice gives the same signal (the encoding pass follows the analysis pass).
        assert_eq!(read_all(&mut store, 1000), signal);
        // The scratch file has no name: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_empty_store_has_no_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SampleStore::new(10, dir.path());
        assert!(store.is_empty());
        assert!(store.chunks(4).unwrap().next_chunk().unwrap().is_none());
    }
}
