//! A part's manifest: the small JSON file, written last, that makes a part
//! complete. It names the attempt's files with their sizes, row counts and
//! sha256, and records how the rows were made (model, weights, dtype,
//! preprocessing, feature width, run id) and what happened to every input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::Role;

/// The manifest format this build writes and reads.
pub const FORMAT: &str = "fruits-part/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// `features` (from `featurize`) or `reduced` (from `pca transform`).
    pub kind: String,
    pub part: u32,
    pub attempt: String,
    /// UTC, RFC 3339.
    pub written_at: String,
    pub fruits_version: String,
    /// How the rows were made: the Parquet metadata keys
    /// ([`crate::part::schema::meta::RUN`]) and their values. Parts of one folder
    /// must agree on all of them.
    pub run: BTreeMap<String, String>,
    /// What happened to the inputs: `inputs`, `featurised`, `rejected`,
    /// `not_images`, `duplicates` (features); `rows` (reduced).
    pub counts: BTreeMap<String, u64>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub role: Role,
    /// Relative to the part's folder.
    pub name: String,
    pub bytes: u64,
    /// Data rows (the CSV header is not one).
    pub rows: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn file(&self, role: Role) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == role)
    }

    /// When the part was committed (`written_at`), if it parses.
    pub fn written(&self) -> Option<std::time::SystemTime> {
        let format = aws_smithy_types::date_time::Format::DateTime;
        let t = aws_smithy_types::DateTime::from_str(&self.written_at, format).ok()?;
        std::time::SystemTime::try_from(t).ok()
    }

    /// `run[key]`, or `?` when absent.
    pub fn run_value(&self, key: &str) -> &str {
        self.run.get(key).map(String::as_str).unwrap_or("?")
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        text.push(b'\n');
        text
    }

    /// Parses and checks a manifest's bytes; the error says what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("not a fruits part manifest: {e}"))?;
        if m.format != FORMAT {
            return Err(format!("format {:?}, this fruits reads {FORMAT:?}", m.format));
        }
        if m.file(Role::Rows).is_none() {
            return Err("names no rows file".into());
        }
        for f in &m.files {
            if f.name.is_empty() || f.name.starts_with('/') || f.name.split('/').any(|s| s == ".." || s.is_empty()) {
                return Err(format!("names a file outside its folder: {:?}", f.name));
            }
        }
        Ok(m)
    }

    /// Where this manifest's run differs from `other`'s, as `key: a vs b`.
    pub fn run_difference(&self, other: &BTreeMap<String, String>) -> Option<String> {
        let keys: std::collections::BTreeSet<&String> = self.run.keys().chain(other.keys()).collect();
        keys.into_iter().find_map(|k| {
            let (a, b) = (self.run.get(k), other.get(k));
            (a != b).then(|| {
                format!(
                    "{k}: {} vs {}",
                    a.map(String::as_str).unwrap_or("(none)"),
                    b.map(String::as_str).unwrap_or("(none)")
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            kind: "features".into(),
            part: 3,
            attempt: "00ff".into(),
            written_at: "2026-11-25T12:00:00Z".into(),
            fruits_version: "0.1.0".into(),
            run: [("fruits.model".to_string(), "mobilenetv2".to_string())].into(),
            counts: [("inputs".to_string(), 2)].into(),
            files: vec![FileEntry {
                role: Role::Rows,
                name: "part-00003-00ff.parquet".into(),
                bytes: 10,
                rows: 2,
                sha256: "ab".into(),
            }],
        }
    }

    #[test]
    fn round_trips_and_refuses_what_it_cannot_trust() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert!(Manifest::from_json(b"{}").unwrap_err().contains("not a fruits part manifest"));
        let mut bad = sample();
        bad.files[0].name = "../elsewhere.parquet".into();
        assert!(Manifest::from_json(&bad.to_json()).unwrap_err().contains("outside its folder"));
        let mut bad = sample();
        bad.format = "fruits-part/9".into();
        assert!(Manifest::from_json(&bad.to_json()).is_err());
        let other: BTreeMap<String, String> = [("fruits.model".to_string(), "mobilenetv4-small".to_string())].into();
        assert_eq!(m.run_difference(&other).unwrap(), "fruits.model: mobilenetv2 vs mobilenetv4-small");
        assert_eq!(m.run_difference(&m.run), None);
    }
}
