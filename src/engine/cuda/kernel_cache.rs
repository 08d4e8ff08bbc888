//! Compiled kernels kept on disk between processes, so NVRTC runs once per
//! node, not at every model load: a cluster starts one `fruits` per task,
//! and each paid ~1 s of compilation before its first photo.
//!
//! A file is named by everything its bytes depend on: the kernels' source
//! and NVRTC's options (their sha256), the architecture, the output kind and
//! NVRTC's version. A new build with other kernels, another GPU or another
//! NVRTC finds no file and compiles; nothing is ever invalidated by hand.
//! Files are written under a temporary name and renamed into place, so two
//! tasks compiling at once both write whole files and a reader never sees
//! half of one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::nvrtc::{self, Output};
use crate::digest::sha256_bytes;
use crate::error::Result;

/// The folder: `$FRUITS_KERNEL_CACHE` (`off`: no cache), else
/// `$XDG_CACHE_HOME/fruits/kernels`, else `$HOME/.cache/fruits/kernels`.
pub fn folder() -> Option<PathBuf> {
    match std::env::var_os("FRUITS_KERNEL_CACHE").filter(|v| !v.is_empty()) {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => crate::user_cache::folder("kernels"),
    }
}

/// Where the kernels came from.
#[derive(Debug, Clone)]
pub enum Got {
    /// Read from this cache file.
    Cached(PathBuf),
    /// Compiled now, in `seconds`, and kept in `kept` (when there is a cache).
    Compiled { seconds: f64, kept: Option<PathBuf> },
}

/// The file `arch`'s kernels are kept in, for this NVRTC.
pub fn file_name(arch: &str, output: Output) -> Result<String> {
    let (major, minor) = nvrtc::version()?;
    let ext = match output {
        Output::Cubin => "cubin",
        Output::Ptx => "ptx",
    };
    let key = sha256_bytes(format!("{}\n{:?}\n{}", nvrtc::options(arch).join(" "), output, nvrtc::SOURCE).as_bytes());
    Ok(format!("kernels-{arch}-nvrtc{major}.{minor}-{}.{ext}", &key[..16]))
}

/// [`nvrtc::compile`] through the cache in [`folder`]. A cache that cannot
/// be written is said on stderr once per process, and the kernels are used
/// all the same.
pub fn compiled(arch: &str, output: Output) -> Result<(Vec<u8>, Got)> {
    // Without NVRTC there is no version to name a file by: compile says why.
    let at = match folder().filter(|_| nvrtc::available()) {
        Some(dir) => Some(dir.join(file_name(arch, output)?)),
        None => None,
    };
    if let Some(bytes) = at.as_deref().and_then(|p| std::fs::read(p).ok()).filter(|b| looks_whole(b, output)) {
        return Ok((bytes, Got::Cached(at.expect("read from it"))));
    }
    let start = Instant::now();
    let bytes = nvrtc::compile(arch, output)?;
    let seconds = start.elapsed().as_secs_f64();
    let kept = at.and_then(|p| match keep(&p, &bytes) {
        Ok(()) => Some(p),
        Err(e) => {
            warn_once(&format!(
                "fruits: cannot keep the compiled kernels in {}: {e}; compiling at every start",
                p.display()
            ));
            None
        }
    });
    Ok((bytes, Got::Compiled { seconds, kept }))
}

/// An ELF file for a CUBIN, text for PTX: what a crashed writer or another
/// program cannot leave under the name by accident.
fn looks_whole(bytes: &[u8], output: Output) -> bool {
    match output {
        Output::Cubin => bytes.starts_with(b"\x7fELF"),
        Output::Ptx => bytes.windows(8).any(|w| w == b".target "),
    }
}

fn keep(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn warn_once(message: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("{message}"));
}
