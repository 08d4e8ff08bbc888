//! Helpers shared by the integration tests: a fresh work folder per test,
//! the real `fruits` binary, and an independent Parquet reader (pyarrow).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample_dir() -> PathBuf {
    repo().join("tests/data/fruits-360-sample")
}

/// A fresh, empty folder for one test, kept under target/ for inspection.
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    pub fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = repo()
            .join("target/test-work")
            .join(format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

/// The `fruits` binary built for these tests.
pub fn fruits() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruits"));
    // No test may reach the network: the hub endpoint is a closed loopback port.
    cmd.env("HF_ENDPOINT", "http://127.0.0.1:9").env("HF_HOME", repo().join("target/test-work/hf-home"));
    cmd
}

/// Runs `cmd`; on an unexpected exit code, panics with everything needed to see why.
pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>, want_code: i32) -> Output {
    let cmd = cmd.borrow_mut();
    let out = cmd.output().expect("fruits binary runs");
    if out.status.code() != Some(want_code) {
        panic!(
            "\n{:?}\nwanted exit {want_code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
            cmd,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The Python with pyarrow and duckdb: $FRUITS_PYTHON, else the project's
/// .venv made by .ci/run.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FRUITS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with pyarrow: run .ci/run (it makes .venv) or set FRUITS_PYTHON to a Python that has pyarrow and duckdb"
    );
    venv
}

/// Reads a Parquet file with pyarrow (and checks it with DuckDB); returns its JSON dump.
pub fn read_parquet(path: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo().join("tests/read_parquet.py"))
        .arg(path)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "read_parquet.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("read_parquet.py prints JSON")
}
