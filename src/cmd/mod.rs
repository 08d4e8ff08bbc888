//! One module per subcommand: its `Args` (whose doc comments are the help)
//! and a `run` that turns them into library calls and prints the outcome.
//! Commands get the global options as a value; none imports the parser.

pub mod bench;
pub mod bench_sweep;
pub mod cp;
pub mod demo;
pub mod featurize;
pub mod identify;
pub mod index;
pub mod info;
pub mod list;
pub mod parts;
pub mod pca;
pub mod regions;
pub mod report;
pub mod serve;
pub mod weights;

/// The run could not proceed (missing weights, unreadable input, ...).
pub const EXIT_ERROR: u8 = 1;
/// A value on the command line is wrong (as clap's own errors).
pub const EXIT_USAGE: u8 = 2;
/// More images were rejected than `--max-rejected` allows.
pub const EXIT_TOO_MANY_REJECTED: u8 = 3;

/// A command-line error found after parsing: exits 2 like the parser's.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(fruits::Error::Usage(msg.into()))
}

/// The exit status for an error: 2 for a bad command line, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<fruits::Error>() {
        Some(fruits::Error::Usage(_)) => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

/// A fraction in [0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a fraction in [0, 1]")),
    }
}

/// A fraction in (0, 1] (`--variance`).
pub fn parse_positive_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction in (0, 1]")),
    }
}

/// A byte count: `1000000`, `64K`, `64M`, `2G` (binary units; `KiB`, `MB` ... too).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("'{s}': unit must be K, M or G")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a byte count"))?;
    match n.checked_shl(shift).filter(|v| v >> shift == n) {
        Some(v) if v > 0 => Ok(v),
        Some(_) => Err(format!("'{s}': must be at least 1 byte")),
        None => Err(format!("'{s}' is too large")),
    }
}

/// A sha256 as 64 hex digits (stored lowercase).
pub fn parse_sha256(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("'{s}' is not a sha256 (64 hex digits)"))
    }
}

/// A run id: 1 to 128 of `A-Z a-z 0-9 . _ : -`.
pub fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}': a run id is 1 to 128 of A-Z a-z 0-9 . _ : -"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("0").is_err() && parse_bytes("12X").is_err() && parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }

    #[test]
    fn run_ids() {
        assert!(parse_run_id("application_1732_0001").is_ok());
        assert!(parse_run_id("").is_err() && parse_run_id("a/b").is_err());
    }
}
