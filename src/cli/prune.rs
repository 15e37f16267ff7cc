//! `kiln prune`: removes build cache records and the snapshots only they kept, like
//! `docker builder prune`. Images in the store and their blobs are left alone.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Flags of `kiln prune`.
#[derive(Args, Debug)]
pub(crate) struct PruneArgs {
    /// Remove every cache record, not only dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Remove the oldest cache records until snapshots use at most SIZE (e.g. `512MB`, `10GB`;
    /// units are powers of 1024, as in docker).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
}

pub(crate) fn run(root: Option<PathBuf>, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let state_dir = root.unwrap_or_else(super::default_state_dir);
    // Layer blobs only the removed records used go too.
    let store = kiln_solver::open_content_store(&state_dir)?;
    let candidates = super::system::used_layers(&store, &state_dir);
    let report = kiln::Builder::new(&state_dir).prune(&kiln::PruneOptions {
        all: args.all,
        keep_storage: args.keep_storage,
    })?;
    let orphans = super::system::remove_orphan_layers(&store, &state_dir, &candidates)?;
    println!(
        "Removed {} cache records and {} snapshots",
        report.records_removed, report.snapshots_removed
    );
    println!(
        "Total reclaimed space: {}",
        human_size(report.bytes_freed + orphans)
    );
    Ok(ExitCode::SUCCESS)
}

/// Parses a size the way docker's `--keep-storage` does (go-units `RAMInBytes`): a number,
/// optionally fractional, then an optional unit `b k kb kib m mb mib g gb gib t tb tib`, any
/// case, each step a factor of 1024.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: expected a number and a unit, e.g. 10GB"))?;
    let power = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 2,
        "g" | "gb" | "gib" => 3,
        "t" | "tb" | "tib" => 4,
        other => return Err(format!("invalid size `{text}`: unknown unit `{other}`")),
    };
    Ok((number * 1024f64.powi(power)) as u64)
}

/// Formats bytes as docker does in prune reports (decimal units, up to 3 significant digits).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::{human_size, parse_size};

    #[test]
    fn sizes_parse_with_docker_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("512MB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("1.5GiB"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_size("10gb"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(
            parse_size("10XB"),
            Err("invalid size `10XB`: unknown unit `xb`".to_string())
        );
        assert!(parse_size("GB").is_err());
    }

    #[test]
    fn reclaimed_space_reads_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(12_345_678), "12.346MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }
}
