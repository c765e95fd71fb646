//! `speechmill cache stats|clear`: the result cache of `speechmill process`.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use speechmill_queue::{ResultCacheStore, SqliteResultCache, SystemClock};

use crate::cli::{CacheArgs, CacheCommand};
use crate::config::Config;
use crate::exit;
use crate::process::CACHE_FILE;

/// Runs a `cache` subcommand and returns the exit code.
pub fn run(command: CacheCommand) -> u8 {
    let (args, clear) = match command {
        CacheCommand::Stats(args) => (args, false),
        CacheCommand::Clear(args) => (args, true),
    };
    match run_on(&args, clear) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            exit::FAILURE
        }
    }
}

fn run_on(args: &CacheArgs, clear: bool) -> anyhow::Result<u8> {
    let mut overrides = Map::new();
    if let Some(dir) = &args.cache_dir {
        overrides.insert("cache".into(), json!({ "dir": dir }));
    }
    let config = match Config::load(Config::file_from(args.config.clone()).as_deref(), Value::Object(overrides)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            return Ok(exit::USAGE);
        }
    };
    let Some(folder) = config.cache.folder() else {
        eprintln!("speechmill: no result cache folder (set --cache-dir, XDG_CACHE_HOME or HOME)");
        return Ok(exit::USAGE);
    };
    let file = folder.join(CACHE_FILE);
    if !file.exists() {
        println!("result cache: {} (empty: no cache file yet)", folder.display());
        return Ok(exit::OK);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = SqliteResultCache::open(&file, Arc::new(SystemClock)).await?;
        if clear {
            let removed = store.cache_clear().await?;
            // Give the freed pages back to the file system.
            store.close().await;
            vacuum(&file).await?;
            println!("result cache: {}: removed {removed} entries", folder.display());
            return Ok(exit::OK);
        }
        let stats = store.cache_stats().await?;
        store.close().await;
        let size = std::fs::metadata(&file).map(|meta| meta.len()).unwrap_or(0);
        println!("result cache: {}", folder.display());
        println!("  entries: {}", stats.entries);
        println!(
            "  stored bytes: {} (file {} bytes; limit cache.max_bytes = {})",
            stats.bytes, size, config.cache.max_bytes
        );
        for (version, counts) in &stats.by_version {
            println!("  version {version}: {} entries, {} bytes", counts.entries, counts.bytes);
        }
        Ok(exit::OK)
    })
}

/// Shrinks the cache file after a clear.
async fn vacuum(file: &std::path::Path) -> anyhow::Result<()> {
    SqliteResultCache::open(file, Arc::new(SystemClock)).await?.vacuum().await?;
    Ok(())
}
