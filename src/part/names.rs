//! How a part's files are named inside its folder.
//!
//! ```text
//! <folder>/part-00042-<attempt>.parquet                     the rows
//! <folder>/_fruits/part-00042-<attempt>.errors.csv          rejections (features parts)
//! <folder>/_fruits/part-00042-<attempt>.stats.safetensors   PCA statistics (features parts)
//! <folder>/_fruits/part-00042.manifest.json                 the commit: names the files above
//! ```
//!
//! Data files carry the attempt's id, so two attempts of one part never
//! write the same name; the manifest has one name per part, so the last
//! one written decides. Everything but the rows sits in `_fruits/`, which
//! Spark and Hive skip (a leading `_`), so `spark.read.parquet(folder)`
//! reads rows only.

/// The folder beside the rows for everything else.
pub const SIDE_DIR: &str = "_fruits";

/// What a file of a part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The rows: features, or reduced features.
    Rows,
    Errors,
    Stats,
}

/// `part-00042`.
pub fn stem(part: u32) -> String {
    format!("part-{part:05}")
}

/// A file of one attempt, relative to the folder.
pub fn file_name(part: u32, attempt: &str, role: Role) -> String {
    let stem = stem(part);
    match role {
        Role::Rows => format!("{stem}-{attempt}.parquet"),
        Role::Errors => format!("{SIDE_DIR}/{stem}-{attempt}.errors.csv"),
        Role::Stats => format!("{SIDE_DIR}/{stem}-{attempt}.stats.safetensors"),
    }
}

/// The part's manifest, relative to the folder.
pub fn manifest_name(part: u32) -> String {
    format!("{SIDE_DIR}/{}.manifest.json", stem(part))
}

/// The part number of a manifest's path relative to the folder.
pub fn manifest_part(rel: &str) -> Option<u32> {
    let digits = rel.strip_prefix(SIDE_DIR)?.strip_prefix("/part-")?.strip_suffix(".manifest.json")?;
    (digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Whether a file (relative to the folder) has the shape of a part's data
/// file, committed or not: what `fruits parts clean` may remove when no
/// manifest names it.
pub fn is_part_file(rel: &str) -> bool {
    let name = rel.strip_prefix(SIDE_DIR).and_then(|r| r.strip_prefix('/')).unwrap_or(rel);
    if name.contains('/') || !name.starts_with("part-") || manifest_part(rel).is_some() {
        return false;
    }
    let in_side = rel.starts_with(SIDE_DIR);
    if in_side {
        name.ends_with(".errors.csv") || name.ends_with(".stats.safetensors")
    } else {
        name.ends_with(".parquet")
    }
}

/// A rows file of some attempt (`part-00042-<16 hex>.parquet`), committed or not.
pub fn is_attempt_rows(rel: &str) -> bool {
    let Some(rest) = rel.strip_prefix("part-").and_then(|r| r.strip_suffix(".parquet")) else { return false };
    let Some((digits, attempt)) = rest.split_once('-') else { return false };
    digits.len() >= 5
        && digits.bytes().all(|b| b.is_ascii_digit())
        && attempt.len() == 16
        && attempt.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A local staging file: hidden (a leading `.`), so no reader takes it.
pub fn is_staging(rel: &str) -> bool {
    rel.rsplit('/').next().is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
}

/// A fresh attempt id: 16 hex digits from the OS's randomness.
pub fn new_attempt() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42, "00ff", Role::Rows), "part-00042-00ff.parquet");
        assert_eq!(file_name(42, "00ff", Role::Errors), "_fruits/part-00042-00ff.errors.csv");
        assert_eq!(manifest_name(42), "_fruits/part-00042.manifest.json");
        assert_eq!(manifest_part("_fruits/part-00042.manifest.json"), Some(42));
        assert_eq!(manifest_part("_fruits/part-1234567.manifest.json"), Some(1234567));
        assert_eq!(manifest_part("_fruits/part-42.manifest.json"), None);
        assert_eq!(manifest_part("part-00042.manifest.json"), None);
        assert!(is_part_file("part-00042-00ff.parquet") && is_part_file("_fruits/part-00042-00ff.stats.safetensors"));
        assert!(!is_part_file("_fruits/part-00042.manifest.json") && !is_part_file("scatter.svg"));
        assert!(!is_part_file("sub/part-1.parquet"));
        assert!(is_attempt_rows("part-00042-0123456789abcdef.parquet"));
        assert!(!is_attempt_rows("part-00000-5d1d4f3e-8c4b-4d1e-9b4a-2f1e0c9d8b7a-c000.snappy.parquet"));
        assert!(!is_attempt_rows("part-00042.parquet"));
        assert!(is_staging("_fruits/.part-00042.manifest.json.00ff.tmp") && !is_staging("part-1.parquet"));
        assert_ne!(new_attempt(), new_attempt());
        assert_eq!(new_attempt().len(), 16);
    }
}
