//! `obd cache ls|gc|clear`: the shared registry cache. When a daemon runs, the commands go
//! through it (so `clear` is safe while devices read); otherwise they work on the cache
//! directory (`cacheConfig.cacheDir`, or `--dir`) directly.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use obd_daemon::client::Client;
use obd_image::GlobalConfig;

use super::daemon::ConnArgs;

/// `obd cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: CacheAction,
    /// Which daemon / global config.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Work on this cache directory directly, without asking a daemon.
    #[arg(long, value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
}

/// `obd cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List cached blobs: digest, size, cached bytes, last use.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evict least recently used blobs down to a size (default 90% of cacheSizeGB).
    Gc {
        /// Keep at most this many bytes (suffixes K, M, G allowed).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        target: Option<u64>,
    },
    /// Remove every cached blob (devices keep working and refetch).
    Clear,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size '{s}': use bytes, or a number with K, M or G"))
}

/// Where the command runs: through a daemon, or on a directory.
enum Target {
    Daemon(Client),
    Dir(PathBuf, u64),
}

fn target(a: &CacheArgs) -> Result<Target> {
    let g = GlobalConfig::load_or_default(&a.conn.service_config)?.value;
    let capacity = u64::from(g.cache_config.cache_size_gb) << 30;
    if let Some(d) = &a.dir {
        return Ok(Target::Dir(d.clone(), capacity));
    }
    let client = Client::new(a.conn.socket()?);
    if client.socket().exists() && client.health().is_ok() {
        return Ok(Target::Daemon(client));
    }
    Ok(Target::Dir(g.cache_config.cache_dir, capacity))
}

/// Run `obd cache`.
pub fn run(a: &CacheArgs) -> Result<()> {
    match (&a.action, target(a)?) {
        (CacheAction::Ls { json }, Target::Daemon(c)) => {
            let r = c.cache()?;
            let entries: Vec<obd_cache::CacheEntry> =
                serde_json::from_value(r.entries.clone()).unwrap_or_default();
            print_list(&r.dir, &entries, *json, Some(&r.usage))
        }
        (CacheAction::Ls { json }, Target::Dir(d, _)) => {
            let entries = obd_cache::scan_dir(&d)?;
            print_list(&d, &entries, *json, None)
        }
        (CacheAction::Gc { target }, Target::Daemon(c)) => {
            println!("{}", serde_json::to_string_pretty(&c.cache_gc(*target)?)?);
            Ok(())
        }
        (CacheAction::Gc { target }, Target::Dir(d, cap)) => {
            let r = obd_cache::gc_dir(&d, target.unwrap_or(cap / 10 * 9))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        (CacheAction::Clear, Target::Daemon(c)) => {
            let r = c.cache_clear()?;
            eprintln!(
                "cache cleared through the daemon on {}",
                c.socket().display()
            );
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        (CacheAction::Clear, Target::Dir(d, _)) => {
            let freed = obd_cache::clear_dir(&d)
                .with_context(|| format!("cannot clear {}", d.display()))?;
            eprintln!("cleared {} ({freed} bytes freed)", d.display());
            Ok(())
        }
    }
}

fn print_list(
    dir: &std::path::Path,
    entries: &[obd_cache::CacheEntry],
    json: bool,
    usage: Option<&serde_json::Value>,
) -> Result<()> {
    if json {
        let v = serde_json::json!({ "dir": dir, "usage": usage, "entries": entries });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("cache {}", dir.display());
    println!(
        "{:<71} {:>14} {:>14} {:>5} {:>8}",
        "DIGEST", "SIZE", "CACHED", "OPEN", "IDLE"
    );
    let now = std::time::SystemTime::now();
    let mut total = 0u64;
    for e in entries {
        total += e.cached_bytes;
        let idle = now.duration_since(e.last_used).map_or(0, |d| d.as_secs());
        println!(
            "{:<71} {:>14} {:>14} {:>5} {:>7}s",
            e.digest,
            e.size,
            e.cached_bytes,
            if e.open { "yes" } else { "no" },
            idle
        );
    }
    println!("{} blob(s), {total} bytes cached", entries.len());
    Ok(())
}
