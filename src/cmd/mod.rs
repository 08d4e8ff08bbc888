//! One module per subcommand: its `Args` (whose doc comments are the help)
//! and a `run` that turns them into library calls and prints the outcome.
//! Commands get the global options as a value; none imports the parser.
//! `parse` holds the value parsers the flags share.

/// `println!` for a command's output: a reader that stops early
/// (`fruits identify … | head`) ends the run quietly with success, as
/// `SIGPIPE` ends other tools (Rust ignores that signal, and `println!`
/// then panics); any other write error is printed once, exit 1.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cmd::say_line(format_args!($($arg)*))
    };
}

pub mod bench;
pub mod bench_sweep;
pub mod cp;
pub mod demo;
pub mod featurize;
pub mod featurize_json;
pub mod identify;
pub mod index;
pub mod info;
pub mod list;
pub mod pack;
pub mod parse;
pub mod parts;
pub mod pca;
pub mod regions;
pub mod serve;
pub mod weights;

use fruits::engine::{DeviceChoice, Target};
use fruits::error::{Error, Param};

/// The run could not proceed (missing weights, unreadable input, ...).
pub const EXIT_ERROR: u8 = 1;
/// A value on the command line is wrong (as clap's own errors).
pub const EXIT_USAGE: u8 = 2;
/// More images were rejected than `--max-rejected` allows.
pub const EXIT_TOO_MANY_REJECTED: u8 = 3;

/// What [`say!`] writes; see there.
pub fn say_line(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(format_args!("{line}\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("fruits: error: writing to standard output: {e}");
        std::process::exit(EXIT_ERROR.into());
    }
}

/// A command-line error found after parsing (exits 2 like the parser's).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// The exit status for an error: 2 for a bad command line (the parser's
/// own, or a parameter the library refused), else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let bad_request = |c: &(dyn std::error::Error + 'static)| {
        c.is::<Usage>() || c.downcast_ref::<Error>().is_some_and(Error::is_invalid_request)
    };
    if e.chain().any(bad_request) {
        EXIT_USAGE
    } else {
        EXIT_ERROR
    }
}

/// Resolves `--device`, saying on stderr why `auto` runs on the CPU: a user
/// who expected a GPU must learn what is missing.
pub fn device(choice: DeviceChoice, cpu_only: Option<&str>) -> anyhow::Result<Target> {
    let resolved = fruits::engine::device(choice, cpu_only)?;
    if let Some(why) = &resolved.cpu_because {
        eprintln!("fruits: --device auto: running on the CPU: {why}");
    }
    Ok(resolved.target)
}

/// The flag that sets a library parameter: the one place the library's
/// words meet the command line's.
pub fn flag(p: Param) -> &'static str {
    match p {
        Param::Components | Param::Neighbours => "--k",
        Param::Variance => "--variance",
        Param::IndexComponents => "--components",
        Param::IndexPca => "--pca",
        Param::IndexCentre => "--centre",
        Param::BatchSize => "--batch",
        Param::DecodeThreads => "--threads",
        Param::Dtype => "--dtype",
        Param::Engine => "--engine",
        Param::Device => "--device",
        Param::Plot => "--plot",
        Param::Features => "--features",
        Param::Input => "--input",
        Param::Output => "--output",
        Param::Sha256 => "--sha256",
        Param::Model => "--model",
        _ => "an option",
    }
}

/// An error as the CLI prints it: its chain (`a: b: c`), each library error
/// that names a parameter worded with the flag, then what the user can do.
pub fn message(e: &anyhow::Error) -> String {
    let mut hints = Vec::new();
    let links: Vec<String> = e
        .chain()
        .map(|c| match c.downcast_ref::<Error>() {
            Some(f) => {
                let (text, hint) = word(f);
                hints.extend(hint);
                text
            }
            None => c.to_string(),
        })
        .collect();
    let mut out = links.join(": ");
    for h in hints {
        out.push_str("\nfruits: hint: ");
        out.push_str(&h);
    }
    out
}

/// One library error in the command line's words, and a hint.
fn word(e: &Error) -> (String, Option<String>) {
    match e {
        Error::Invalid { param: Param::Input, reason } => {
            (format!("--input {reason}"), Some("featurize a list of files or objects with --keys LIST".into()))
        }
        Error::Invalid { param, reason } => (format!("{} {reason}", flag(*param)), None),
        Error::Needs { param, needs } => (format!("{} needs {}", flag(*param), flag(*needs)), None),
        Error::Nested { output, input, within } => {
            (format!("--output {output} is inside {} {input}: the job would read its own output", flag(*within)), None)
        }
        Error::NoGpu { .. } => (format!("--device cuda: {e}"), None),
        Error::OtherRun { .. } => {
            (e.to_string(), Some("use another output folder, the same settings, or --overwrite to replace them".into()))
        }
        Error::NotTheIndexModel { .. } => {
            (e.to_string(), Some("pass the index's --model, --weights and --dtype".into()))
        }
        Error::NoWeights { .. } => (
            format!("no --weights given and {e}"),
            Some("pass --weights PATH, or --weights random:SEED for a test run".into()),
        ),
        Error::Unpinned { actual, .. } => (
            e.to_string(),
            Some(format!(
                "compare it with the hub's Git LFS pointer and pass --sha256 {actual} (or pin it in the manifest)"
            )),
        ),
        Error::RegionOutsideEurope { .. } | Error::BucketOutsideEurope { .. } => {
            (e.to_string(), Some("fruits keeps photos in Europe: docs/GUIDE.md, section S3, says how".into()))
        }
        _ => (e.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(e: Error) -> (String, u8) {
        let e = anyhow::Error::new(e);
        (message(&e), exit_code(&e))
    }

    /// The library names parameters; the CLI words them as its flags, adds
    /// what the user can do, and exits 2 for a refused parameter.
    #[test]
    fn library_errors_are_worded_with_the_flags() {
        let (m, code) = said(Error::invalid(Param::Components, "must be between 1 and the feature width 12, got 20"));
        assert_eq!((m.as_str(), code), ("--k must be between 1 and the feature width 12, got 20", EXIT_USAGE));
        let (m, code) = said(Error::Needs { param: Param::IndexComponents, needs: Param::IndexPca });
        assert_eq!((m.as_str(), code), ("--components needs --pca", EXIT_USAGE));
        let (m, code) = said(Error::Nested { output: "a/b".into(), input: "a".into(), within: Param::Features });
        assert!(m.starts_with("--output a/b is inside --features a:") && code == EXIT_USAGE, "{m}");
        let (m, code) =
            said(Error::Unpinned { model: "m".into(), path: "w.safetensors".into(), actual: "ab12".into() });
        assert!(m.contains("hashes to ab12") && m.contains("\nfruits: hint:") && m.contains("--sha256 ab12"), "{m}");
        assert_eq!(code, EXIT_ERROR);
        let (m, _) =
            said(Error::OtherRun { folder: "out/".into(), which: "part 0".into(), key: "fruits.dtype".into() });
        assert!(m.contains("--overwrite"), "{m}");
        // A chain is printed link by link, once.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let (m, code) = said(Error::Input { path: "nope".into(), source: io });
        assert_eq!((m.as_str(), code), ("cannot read input nope: No such file or directory", EXIT_ERROR));
        // The parser's own kind of error, found after parsing.
        let e = usage("--keys and --input together");
        assert_eq!((message(&e), exit_code(&e)), ("--keys and --input together".to_string(), EXIT_USAGE));
    }

    /// Every parameter the library can name has its flag here.
    #[test]
    fn every_parameter_has_its_flag() {
        for p in Param::ALL {
            assert!(flag(p).starts_with("--"), "{p:?}");
        }
    }
}
