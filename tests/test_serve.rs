//! `fruits serve` end to end over loopback: the real binary, real HTTP
//! (ureq, and raw sockets for what a polite client would never send).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{fruits, run, sample_dir, Dir};

/// A running server; killed if the test fails before stopping it.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's index (random:7): Training photos of 5 fruits.
pub(crate) fn demo_index(dir: &Dir) -> PathBuf {
    let mut cmd = fruits();
    cmd.args(["demo", "--weights", "random:7", "--output"]).arg(dir.join("demo"));
    run(cmd, 0);
    dir.join("demo/index")
}

pub(crate) fn start(index: &Path, cwd: &Path, extra: &[&str]) -> Server {
    start_with_metrics(index, cwd, extra).0
}

/// A server with `/metrics` on an address of its own: (server, that address).
pub(crate) fn start_with_metrics(index: &Path, cwd: &Path, extra: &[&str]) -> (Server, String) {
    let mut cmd = fruits();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--index"]).arg(index).args(extra);
    cmd.current_dir(cwd).env("TMPDIR", cwd).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut address = || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|a| a.trim_end_matches("/metrics").to_string())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    };
    let (addr, metrics) = (address(), address());
    child.stdout = Some(out.into_inner());
    (Server { child, addr }, metrics)
}

pub(crate) fn photo(name: &str) -> Vec<u8> {
    std::fs::read(sample_dir().join(name)).unwrap()
}

/// POST bytes; (status, JSON body).
pub(crate) fn post(addr: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let r = ureq::post(&format!("http://{addr}/v1/identify")).set("Content-Type", content_type).send_bytes(body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

fn multipart(field: &str, filename: Option<&str>, bytes: &[u8]) -> (String, Vec<u8>) {
    let b = "----fruitsboundary7";
    let mut body = format!("--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n").into_bytes();
    let file = filename.map(|f| format!("; filename=\"{f}\"")).unwrap_or_default();
    body.extend(
        format!("--{b}\r\nContent-Disposition: form-data; name=\"{field}\"{file}\r\nContent-Type: image/jpeg\r\n\r\n")
            .bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend(format!("\r\n--{b}--\r\n").bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

pub(crate) fn get(addr: &str, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://{addr}{path}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

/// The count of a metric line `name{labels} value`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// Sends `raw` and reads until the server closes or `wait` passes: (reply, closed).
pub(crate) fn raw_exchange(addr: &str, raw: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(raw).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let closed = match s.read_to_end(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

#[test]
fn the_api_answers_photos_and_refuses_bad_uploads() {
    let dir = Dir::new("serve-api");
    let index = demo_index(&dir);
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let (s, metrics_at) =
        start_with_metrics(&index, &cwd, &["--max-body", "1M", "--header-timeout", "1", "--request-timeout", "2"]);
    let a = &s.addr;

    // A second server on the same address: not a bad command line (exit 1,
    // not 2), and the message names the address and the system's reason.
    let mut second = fruits();
    second.args(["serve", "--addr", a, "--index"]).arg(&index).current_dir(&cwd);
    let err = crate::util::stderr(&run(second, 1));
    assert!(err.contains(&format!("cannot listen on {a}: ")) && err.to_lowercase().contains("in use"), "{err}");

    // A good photo, raw and as a phone's multipart form: the same answer as `identify`.
    let apple = photo("Test/Apple/f0_100.jpg");
    let (status, raw) = post(a, "image/jpeg", &apple);
    assert_eq!(status, 200, "{raw}");
    let (ct, body) = multipart("photo", Some("IMG_0001.jpg"), &apple);
    let (status, form) = post(a, &ct, &body);
    assert_eq!(status, 200, "{form}");
    let mut cmd = fruits();
    cmd.arg("identify").arg(sample_dir().join("Test/Apple/f0_100.jpg")).arg("--index").arg(&index).arg("--json");
    let cli: Vec<Value> = serde_json::from_slice(&run(cmd, 0).stdout).unwrap();
    for field in ["fruit", "unknown", "score", "top", "info"] {
        assert_eq!(raw[field], cli[0][field], "{field}");
        assert_eq!(form[field], cli[0][field], "{field}");
    }
    // The same neighbours, by label: the server's files are not shown
    // (`--show-paths` shows them: hostile_clients_cannot_stall_the_server).
    for (got, want) in raw["neighbours"].as_array().unwrap().iter().zip(cli[0]["neighbours"].as_array().unwrap()) {
        assert!(got.get("path").is_none() && want["path"].is_string(), "{got} {want}");
        assert_eq!((&got["label"], &got["similarity"]), (&want["label"], &want["similarity"]));
    }
    assert!(raw["timings_ms"]["total"].as_f64().unwrap() > 0.0 && raw["timings_ms"]["batch"].as_u64().unwrap() >= 1);
    assert_eq!(raw["neighbours"].as_array().unwrap().len(), fruits::app::index::vote::DEFAULT_K);

    // Every kind of bad upload: a 4xx naming the reason.
    let mut truncated = apple.clone();
    truncated.truncate(apple.len() / 2);
    let mut corrupt = apple.clone();
    corrupt[200..400].iter_mut().for_each(|b| *b = 0xFF);
    let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf".to_vec();
    let (ct_nofile, nofile) = {
        let b = "xyz";
        (
            format!("multipart/form-data; boundary={b}"),
            format!("--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{b}--\r\n").into_bytes(),
        )
    };
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("empty", "image/jpeg".into(), vec![], 400, "empty"),
        ("text", "text/plain".into(), b"this is not a photo".to_vec(), 415, "not a known image format"),
        ("truncated", "image/jpeg".into(), truncated, 422, "truncated"),
        ("avif", "image/avif".into(), avif, 415, "AVIF"),
        ("html", "text/html".into(), b"<html><body>hi</body></html>".to_vec(), 415, "not a known image format"),
        ("multipart without file", ct_nofile, nofile, 400, "no file"),
        ("malformed multipart", "multipart/form-data; boundary=abc".into(), b"garbage".to_vec(), 400, "multipart"),
        ("multipart without boundary", "multipart/form-data".into(), apple.clone(), 400, "multipart"),
    ];
    for (what, ct, body, want, reason) in cases {
        let (status, v) = post(a, &ct, &body);
        assert_eq!(status, want, "{what}: {v}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{what}: no error in {v}"));
        assert!(msg.contains(reason), "{what}: {msg}");
    }
    let (corrupt_status, v) = post(a, "image/jpeg", &corrupt);
    let status = corrupt_status;
    assert!(
        status == 422 || status == 200,
        "corrupt data inside a JPEG: decoded or refused, never a crash ({status} {v})"
    );
    // A body declared larger than the limit: refused before it is read.
    let (reply, _) = raw_exchange(
        a,
        b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 2097152\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 413") && reply.contains("larger than"), "{reply}");
    // A body larger than the limit, sent chunked (no Content-Length).
    let mut req =
        b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..40 {
        req.extend(format!("{:x}\r\n", 64 << 10).bytes());
        req.extend(std::iter::repeat_n(b'a', 64 << 10));
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    let (reply, _) = raw_exchange(a, &req, Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 413"), "{}", &reply[..reply.len().min(200)]);
    // Wrong method, wrong route, garbage request line.
    assert_eq!(get(a, "/v1/identify").0, 405);
    assert_eq!(get(a, "/nope").0, 404);
    let (reply, _) = raw_exchange(a, b"\x16\x03\x01 not http at all\r\n\r\n", Duration::from_secs(3));
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply}");

    // Slow clients: headers never finished are cut off after --header-timeout;
    // a body that never arrives gets 408 after --request-timeout.
    let t = Instant::now();
    let (_, closed) = raw_exchange(a, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(8));
    assert!(closed && t.elapsed() < Duration::from_secs(6), "slow headers: closed {closed} after {:?}", t.elapsed());
    let t = Instant::now();
    let (reply, _) = raw_exchange(
        a,
        b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n\xFF\xD8",
        Duration::from_secs(8),
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "slow body: {reply:?} after {:?}", t.elapsed());

    // The page, health and metrics.
    let (status, page) = get(a, "/");
    assert!(status == 200 && page.contains("accept=\"image/*\"") && page.contains("capture"));
    assert!(!page.contains("http://") && !page.contains("https://"), "no external assets");
    let (status, health) = get(a, "/healthz");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!((health["index_rows"].as_u64(), health["weights"].as_str()), (Some(14), Some("random:7")));
    assert_eq!(get(a, "/metrics").0, 404, "the counts are not on the public address");
    let (_, m) = get(&metrics_at, "/metrics");
    let answered = 2.0 + (corrupt_status == 200) as u8 as f64;
    assert_eq!(metric(&m, "fruits_http_requests_total{route=\"/v1/identify\",status=\"200\"}"), answered, "{m}");
    assert_eq!(metric(&m, "fruits_http_requests_total{route=\"/v1/identify\",status=\"415\"}"), 3.0, "{m}");
    assert_eq!(metric(&m, "fruits_batch_size_sum"), answered, "only decoded photos reach the network: {m}");

    // Still answering after all that.
    assert_eq!(post(a, "image/jpeg", &apple).0, 200);
    // Nothing written anywhere: no photo on disk (GDPR), in the working folder or TMPDIR.
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "serve wrote files");
}

#[test]
fn concurrent_clients_share_batches_and_sigterm_drains() {
    let dir = Dir::new("serve-load");
    let index = demo_index(&dir);
    let (s, metrics_at) = start_with_metrics(&index, &dir.path, &["--max-wait-ms", "20"]);
    let a = s.addr.clone();
    let photos: Vec<Vec<u8>> =
        ["Test/Apple/f0_100.jpg", "Test/Kiwi/f0_100.jpg", "Test/Orange/f0_100.jpg"].iter().map(|p| photo(p)).collect();
    let want: Vec<Value> = photos.iter().map(|p| post(&a, "image/jpeg", p).1["fruit"].clone()).collect();
    let threads: Vec<_> = (0..48)
        .map(|i| {
            let (a, p, w) = (a.clone(), photos[i % 3].clone(), want[i % 3].clone());
            std::thread::spawn(move || {
                for _ in 0..4 {
                    let (status, v) = post(&a, "image/jpeg", &p);
                    assert_eq!(status, 200, "{v}");
                    assert_eq!(v["fruit"], w, "a batch answers each photo with its own answer");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, m) = get(&metrics_at, "/metrics");
    let (sum, count) = (metric(&m, "fruits_batch_size_sum"), metric(&m, "fruits_batch_size_count"));
    assert_eq!(sum, 3.0 + 48.0 * 4.0, "every photo went through the batcher once: {m}");
    assert!(sum / count > 1.5, "concurrent requests were batched: {sum} photos in {count} calls");

    // SIGTERM with a request in flight: it is answered, then the server exits 0.
    let body = photos[0].clone();
    let mut slow = TcpStream::connect(&a).unwrap();
    write!(slow, "POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    slow.write_all(&body[..100]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = s;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    slow.write_all(&body[100..]).unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "in-flight request after SIGTERM: {reply}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let mut out = String::new();
    s.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("stopped"), "{out}");
    assert!(TcpStream::connect(&a).is_err(), "no longer listening");
}

/// SIGHUP takes up a rebuilt index with requests in flight, and none fails;
/// a broken one is refused and the last good one keeps answering.
#[test]
fn sighup_takes_up_a_new_index_without_a_failed_request() {
    let dir = Dir::new("serve-reload");
    let index = demo_index(&dir);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    for f in ["vectors.safetensors", "entries.parquet", "index.json"] {
        std::fs::copy(index.join(f), served.join(f)).unwrap();
    }
    let mut s = start(&served, &dir.path, &[]);
    let a = s.addr.clone();
    let health = |a: &str| -> Value { serde_json::from_str(&get(a, "/healthz").1).unwrap() };
    let first = health(&a);
    assert_eq!(first["index_rows"], 14);
    // Photos posted without pause by 8 clients while the index changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || {
                let apple = photo("Test/Apple/f0_100.jpg");
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(post(&a, "image/jpeg", &apple).0);
                }
                statuses
            })
        })
        .collect();
    // Another index from the same features: the 5 Test photos.
    let other = dir.join("other");
    let mut build = fruits();
    build.args(["index", "build", "--features"]).arg(dir.join("demo/features"));
    build.args(["--split", "Test", "--output"]).arg(&other);
    run(build, 0);
    for f in ["vectors.safetensors", "entries.parquet", "index.json"] {
        std::fs::copy(other.join(f), served.join(f)).unwrap();
    }
    let pid = s.child.id().to_string();
    let hup = || assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    hup();
    let t = Instant::now();
    while health(&a)["index_version"] == first["index_version"] {
        assert!(t.elapsed() < Duration::from_secs(20), "the new index was not taken up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = health(&a);
    assert_eq!(second["index_rows"], 5);
    // A broken index: refused; the last good one answers on.
    std::fs::write(served.join("index.json"), b"{ not an index").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(health(&a)["index_version"], second["index_version"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(statuses.len() >= 16 && statuses.iter().all(|s| *s == 200), "{} requests: {statuses:?}", statuses.len());
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut err = String::new();
    s.child.wait().unwrap();
    s.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains(&format!("index reloaded: version {}, 5 rows", second["index_version"].as_str().unwrap())),
        "{err}"
    );
    let refused = format!(
        "index not reloaded, the old one still answers: cannot parse {}: ",
        served.join("index.json").display()
    );
    assert!(err.contains(&refused), "{err}");
}
