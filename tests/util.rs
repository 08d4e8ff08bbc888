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
        let path = repo().join("target/test-work").join(format!(
            "{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
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

/// Copies the folder `from` to `to`, files and folders.
pub fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The `fruits` binary built for these tests.
pub fn fruits() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruits"));
    // No test may reach the network: the hub endpoint is a closed loopback port.
    cmd.env("HF_ENDPOINT", "http://127.0.0.1:9").env("HF_HOME", repo().join("target/test-work/hf-home"));
    // Compiled CUDA kernels stay inside the clone, not in the user's ~/.cache.
    cmd.env("FRUITS_KERNEL_CACHE", repo().join("target/test-work/kernel-cache"));
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
    let out = Command::new(python()).arg(repo().join("tests/read_parquet.py")).arg(path).output().expect("python runs");
    assert!(out.status.success(), "read_parquet.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("read_parquet.py prints JSON")
}

/// The manifest of part `part` in a local folder, as JSON.
pub fn manifest(folder: &Path, part: u32) -> serde_json::Value {
    let path = folder.join(format!("_fruits/part-{part:05}.manifest.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The file of `role` (`rows`, `errors`, `stats`) of a part in a local
/// folder, as its manifest names it.
pub fn part_file(folder: &Path, part: u32, role: &str) -> PathBuf {
    let m = manifest(folder, part);
    let f =
        m["files"].as_array().unwrap().iter().find(|f| f["role"] == role).unwrap_or_else(|| panic!("no {role} in {m}"));
    folder.join(f["name"].as_str().unwrap())
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `fruits` talking to an S3 endpoint with these credentials, and nothing
/// else from this machine's AWS configuration.
fn fruits_s3(endpoint: &str, key: &str, secret: &str) -> Command {
    let mut cmd = fruits();
    cmd.env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_REGION")
        .env_remove("AWS_PROFILE");
    cmd
}

/// Starts `cmd`, which prints `ready PORT` once it listens on 127.0.0.1:PORT.
fn spawn_server(mut cmd: Command, what: &str) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start ({e}); run .ci/run to install moto[server]"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what} did not start: {line:?}"));
    (child, port)
}

/// A real S3-compatible server (moto in server mode) on 127.0.0.1, killed on drop.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
}

/// A fault-injecting or slow proxy in front of an [`S3Server`].
pub struct S3Proxy {
    child: std::process::Child,
    pub port: u16,
}

fn helper() -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/s3_helper.py"));
    cmd
}

impl S3Server {
    pub fn start() -> Self {
        let mut cmd = helper();
        cmd.arg("serve");
        let (child, port) = spawn_server(cmd, "moto S3 server");
        Self { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `s3_helper.py CMD ENDPOINT ARGS...`; panics on failure.
    pub fn helper(&self, cmd: &str, args: &[&str]) -> String {
        self.helper_at(&self.endpoint(), cmd, args)
    }

    pub fn helper_at(&self, endpoint: &str, cmd: &str, args: &[&str]) -> String {
        let out = helper().arg(cmd).arg(endpoint).args(args).output().unwrap();
        assert!(out.status.success(), "s3_helper.py {cmd} {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn proxy(&self, opts: &[&str]) -> S3Proxy {
        let mut cmd = helper();
        cmd.args(["proxy", &self.port.to_string()]).args(opts);
        let (child, port) = spawn_server(cmd, "S3 proxy");
        S3Proxy { child, port }
    }

    /// `fruits` talking to `endpoint` with the test credentials.
    pub fn fruits_at(&self, endpoint: &str) -> Command {
        fruits_s3(endpoint, "test-key-id", "test-secret-key")
    }

    pub fn fruits(&self) -> Command {
        self.fruits_at(&self.endpoint())
    }

    /// Downloads an object to `dest`.
    pub fn get(&self, bucket: &str, key: &str, dest: &Path) {
        self.helper("get", &[bucket, key, dest.to_str().unwrap()]);
    }

    /// The manifest of part `part` under `s3://bucket/prefix` (prefix ends in `/`).
    pub fn manifest(&self, bucket: &str, prefix: &str, part: u32) -> serde_json::Value {
        let text = self.helper("cat", &[bucket, &format!("{prefix}_fruits/part-{part:05}.manifest.json")]);
        serde_json::from_str(&text).unwrap()
    }

    /// The key of a part's file of `role`, as its manifest names it.
    pub fn part_key(&self, bucket: &str, prefix: &str, part: u32, role: &str) -> String {
        let m = self.manifest(bucket, prefix, part);
        let f = m["files"].as_array().unwrap().iter().find(|f| f["role"] == role).unwrap();
        format!("{prefix}{}", f["name"].as_str().unwrap())
    }

    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.helper("keys", &[bucket, prefix]).lines().map(str::to_string).collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A second, independent S3-compatible server: `s3s-fs` (crates.io), which
/// checks every request's signature and answers no bucket location.
/// Installed by `.ci/run` into `.tools/bin`; killed on drop.
pub struct S3sServer {
    child: std::process::Child,
    pub port: u16,
    pub root: PathBuf,
}

impl S3sServer {
    pub const ACCESS_KEY: &'static str = "test-key-id";
    pub const SECRET_KEY: &'static str = "test-secret-key";

    pub fn start(dir: &Dir) -> Self {
        let bin =
            std::env::var_os("FRUITS_S3S_FS").map(PathBuf::from).unwrap_or_else(|| repo().join(".tools/bin/s3s-fs"));
        assert!(
            bin.exists(),
            "s3s-fs is not installed at {}: run .ci/run (it runs `cargo install s3s-fs --version 0.14.1 \
             --features binary --root .tools`), or set FRUITS_S3S_FS",
            bin.display()
        );
        let root = dir.join("s3s-root");
        std::fs::create_dir_all(&root).unwrap();
        // A free port: bind, read it, release it, and start the server on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY, "--secret-key", Self::SECRET_KEY])
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("s3s-fs does not start: {e}"));
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(20), "s3s-fs did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, port, root }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `s3_helper.py CMD ENDPOINT ARGS...` against this server.
    pub fn helper(&self, cmd: &str, args: &[&str]) -> String {
        let out = helper().arg(cmd).arg(self.endpoint()).args(args).output().unwrap();
        assert!(out.status.success(), "s3_helper.py {cmd} {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `fruits` talking to this server with `key`/`secret`.
    pub fn fruits_as(&self, key: &str, secret: &str) -> Command {
        fruits_s3(&self.endpoint(), key, secret)
    }

    pub fn fruits(&self) -> Command {
        self.fruits_as(Self::ACCESS_KEY, Self::SECRET_KEY)
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
