//! `~/.cache/fruits`: what `fruits` makes once per machine and keeps
//! between runs (compiled CUDA kernels, imported weights). Each user of it
//! has its own environment variable to move or turn off its part.

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/fruits/<part>`, else `$HOME/.cache/fruits/<part>`;
/// `None` when neither variable is set (a bare service environment).
pub fn folder(part: &str) -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("fruits").join(part))
}
