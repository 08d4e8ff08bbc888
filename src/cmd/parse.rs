//! The value parsers of the flags (clap `value_parser`s): each returns the
//! message the user sees after the flag's name.

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

/// A byte count: `1000000`, `64K`, `64M`, `2G`, `2 GiB`, `64MB`: units are
/// binary whichever way they are spelled (a memory bound, not a disk size),
/// parsed by the `parse-size` crate.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let config = parse_size::Config::new().with_binary();
    match config.parse_size(s.trim()) {
        Ok(0) => Err(format!("'{s}': must be at least 1 byte")),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("'{s}' is not a byte count ({e})")),
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

/// `--parts`: part numbers as ranges, `0-63` or `0-9,12`.
pub fn parse_parts(s: &str) -> Result<fruits::pca::merge::PartSet, String> {
    s.parse()
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
