//! Where data lives: a local path or an `s3://bucket/key`, parsed once.

use std::path::PathBuf;

/// A folder or file, local or in S3.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl std::str::FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.strip_prefix("s3://") {
            None => Ok(Location::Local(PathBuf::from(s))),
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("'{s}': no bucket name after s3://"));
                }
                Ok(Location::S3 { bucket: bucket.to_string(), key: key.to_string() })
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl Location {
    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// `self` as a folder, with `name` inside it.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, key } => {
                let key =
                    if key.is_empty() || key.ends_with('/') { format!("{key}{name}") } else { format!("{key}/{name}") };
                Location::S3 { bucket: bucket.clone(), key }
            }
        }
    }

    /// Whether `other` is this folder itself or lies inside it.
    pub fn contains(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Local(a), Location::Local(b)) => resolved(b).starts_with(resolved(a)),
            (Location::S3 { bucket: b1, key: k1 }, Location::S3 { bucket: b2, key: k2 }) => {
                let (k1, k2) = (k1.trim_end_matches('/'), k2.trim_end_matches('/'));
                b1 == b2 && (k1.is_empty() || k2 == k1 || k2.starts_with(&format!("{k1}/")))
            }
            _ => false,
        }
    }

    /// The last path segment.
    pub fn file_name(&self) -> String {
        match self {
            Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Location::S3 { key, .. } => key.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string(),
        }
    }
}

/// `p` made absolute, `.` and `..` removed, then resolved through symbolic
/// links as far as it exists: two spellings of one folder compare equal.
fn resolved(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.into_iter().rev());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_join() {
        let l: Location = "s3://fruits-photos/fruits-360/Training/".parse().unwrap();
        assert_eq!(l, Location::S3 { bucket: "fruits-photos".into(), key: "fruits-360/Training/".into() });
        assert_eq!(l.join("x.jpg").to_string(), "s3://fruits-photos/fruits-360/Training/x.jpg");
        let b: Location = "s3://bucket".parse().unwrap();
        assert_eq!(b.join("p").to_string(), "s3://bucket/p");
        assert!("s3:///key".parse::<Location>().is_err());
        assert_eq!("out/x".parse::<Location>().unwrap(), Location::Local("out/x".into()));
        assert_eq!("s3://b/a/part-00001.parquet".parse::<Location>().unwrap().file_name(), "part-00001.parquet");
    }

    #[test]
    fn containment_of_folders() {
        let loc = |s: &str| s.parse::<Location>().unwrap();
        assert!(loc("s3://b/out").contains(&loc("s3://b/out/")));
        assert!(loc("s3://b/out/").contains(&loc("s3://b/out/reduced")));
        assert!(!loc("s3://b/out").contains(&loc("s3://b/output")));
        assert!(!loc("s3://b/out").contains(&loc("s3://c/out")));
        assert!(loc("s3://b").contains(&loc("s3://b/anything")));
        assert!(loc("target/x").contains(&loc("target/x/./y")));
        assert!(loc("target/x/../x").contains(&loc("target/x/z")));
        assert!(!loc("target/x").contains(&loc("target/xy")));
        assert!(!loc("target/x/y").contains(&loc("target/x")));
        assert!(!loc("s3://b/x").contains(&loc("x")));
    }
}
