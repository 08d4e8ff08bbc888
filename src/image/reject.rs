//! Why an image was not featurised: the kinds written to a part's errors
//! file, and the reason beside each.

/// Why an image was not featurised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// The file could not be read at all.
    Unreadable,
    /// Zero bytes.
    Empty,
    /// Content is no image format we decode (whatever its name says).
    Unsupported,
    /// The data stops before the image ends.
    Truncated,
    /// The decoder found invalid data.
    Corrupt,
    /// Bytes beyond `--max-image-bytes`, or dimensions or memory beyond
    /// [`super::MAX_SIDE`] / [`super::MAX_ALLOC`].
    TooLarge,
    /// The decoder panicked on this file (a decoder bug, caught).
    DecoderCrash,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Unreadable => "unreadable",
            RejectKind::Empty => "empty",
            RejectKind::Unsupported => "unsupported",
            RejectKind::Truncated => "truncated",
            RejectKind::Corrupt => "corrupt",
            RejectKind::TooLarge => "too-large",
            RejectKind::DecoderCrash => "decoder-crash",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: RejectKind,
    pub detail: String,
}

impl Rejection {
    pub fn new(kind: RejectKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// A rejected image is also the cause of an error where one photo is all a
/// job reads (`identify`, a file read whole).
impl std::error::Error for Rejection {}
