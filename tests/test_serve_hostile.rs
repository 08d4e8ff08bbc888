//! `fruits serve` against clients that mean harm: sockets that send
//! nothing or half a preface, small files that declare huge images, uploads
//! trickled a byte at a time; and what every answer carries (security
//! headers, no file paths of the server's disk, no metrics in public).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::test_serve::{demo_index, get, photo, post, raw_exchange, start, start_with_metrics};
use crate::util::Dir;

/// GET with a deadline: a server that stalls fails the test instead of hanging it.
fn get_within(addr: &str, path: &str, wait: Duration) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new().timeout(wait).build();
    match agent.get(&format!("http://{addr}{path}")).call() {
        Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(s, r)) => Ok((s, r.into_string().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether the server closed `s` within `wait` (EOF or reset, nothing read).
fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    // EOF, after hyper's last words if any: closed; still open: a timeout.
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn silent_and_half_open_sockets_cannot_stop_the_server() {
    let dir = Dir::new("hostile-sockets");
    let index = demo_index(&dir);
    let header_timeout = Duration::from_secs(2);
    let s = start(&index, &dir.path, &["--max-connections", "4", "--header-timeout", "2"]);
    let a = s.addr.clone();
    // Every connection the server allows, held by a client that never
    // finishes a request: two silent, two with part of an HTTP/2 preface
    // (which held a slot for good while the server guessed the protocol),
    // and then half a request line.
    let hostile: [&[u8]; 5] = [b"", b"", b"PRI * HTTP/2.0\r\n", b"PRI * HTTP/2.0\r\n\r\nSM", b"GET /healthz HTT"];
    let mut held: Vec<TcpStream> = hostile
        .iter()
        .map(|bytes| {
            let mut c = TcpStream::connect(&a).unwrap();
            c.write_all(bytes).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let answer = get_within(&a, "/healthz", Duration::from_secs(20));
    let waited = t.elapsed();
    assert_eq!(answer.as_ref().map(|(status, _)| *status), Ok(200), "{answer:?} after {waited:?}");
    assert!(waited < header_timeout + Duration::from_millis(2500), "/healthz waited {waited:?}");
    for (c, bytes) in held.iter_mut().zip(hostile) {
        assert!(closed_by_server(c, Duration::from_secs(5)), "{:?} still open", String::from_utf8_lossy(bytes));
    }
    // An idle keep-alive connection is closed too, after one answer.
    let mut idle = TcpStream::connect(&a).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let t = Instant::now();
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = idle.read_to_end(&mut rest);
    assert!(t.elapsed() < header_timeout + Duration::from_secs(2), "idle connection open {:?}", t.elapsed());
}

/// A PNG of `side`×`side` RGBA pixels, all zero: about a megabyte that
/// decodes to `4·side²` bytes, written row by row.
fn pixel_bomb(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side, side);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut header = enc.write_header().unwrap();
    let mut w = header.stream_writer().unwrap();
    let row = vec![0u8; side as usize * 4];
    for _ in 0..side {
        w.write_all(&row).unwrap();
    }
    w.finish().unwrap();
    drop(header);
    out
}

#[test]
fn huge_pixel_photos_are_refused_from_their_header_and_normal_photos_answered() {
    let dir = Dir::new("hostile-pixels");
    let index = demo_index(&dir);
    let s = start(&index, &dir.path, &["--request-timeout", "10"]);
    let a = s.addr.clone();
    let bomb = pixel_bomb(16_384);
    assert!(bomb.len() < 16 << 20, "within the default --max-body: {} bytes", bomb.len());
    let bombs: Vec<_> = (0..6)
        .map(|_| {
            let (a, bomb) = (a.clone(), bomb.clone());
            std::thread::spawn(move || post(&a, "image/png", &bomb))
        })
        .collect();
    let apple = photo("Test/Apple/f0_100.jpg");
    let normal: Vec<u16> = (0..10).map(|_| post(&a, "image/jpeg", &apple).0).collect();
    assert!(normal.iter().all(|s| *s == 200), "normal photos during the burst: {normal:?}");
    for b in bombs {
        let (status, v) = b.join().unwrap();
        let msg = v["error"].as_str().unwrap_or_default();
        assert_eq!(status, 413, "{v}");
        assert!(msg.contains("16384x16384 = 268435456 pixels, more than the limit of 50000000"), "{msg}");
    }
    // The limit is the operator's: a tighter one refuses the 100x100 apple.
    let tight = start(&index, &dir.path, &["--max-pixels", "9999"]);
    let (status, v) = post(&tight.addr, "image/jpeg", &apple);
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("100x100 = 10000 pixels, more than the limit of 9999"), "{v}");
}

#[test]
fn a_slow_upload_holds_its_slot_no_longer_than_the_upload_timeout() {
    let dir = Dir::new("hostile-slow");
    let index = demo_index(&dir);
    let s = start(&index, &dir.path, &["--max-in-flight", "1", "--upload-timeout", "2", "--request-timeout", "30"]);
    let a = s.addr.clone();
    let apple = photo("Test/Apple/f0_100.jpg");
    // One byte of the photo every 200 ms: it would take minutes.
    let trickle = {
        let (a, apple) = (a.clone(), apple.clone());
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(&a).unwrap();
            let head = format!(
                "POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                apple.len()
            );
            c.write_all(head.as_bytes()).unwrap();
            let t = Instant::now();
            c.set_nonblocking(true).unwrap();
            let mut reply = Vec::new();
            for byte in &apple {
                if c.write_all(std::slice::from_ref(byte)).is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                if let Ok(n @ 1..) = c.read(&mut buf) {
                    reply.extend_from_slice(&buf[..n]);
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if reply.is_empty() {
                // Cut off mid-write: the answer is waiting to be read.
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = c.read_to_end(&mut reply);
            }
            (String::from_utf8_lossy(&reply).into_owned(), t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (busy, v) = post(&a, "image/jpeg", &apple);
    assert_eq!(busy, 503, "the only slot is the trickler's: {v}");
    let (reply, after) = trickle.join().unwrap();
    assert!(reply.starts_with("HTTP/1.1 408") && reply.contains("upload took longer than 2 s"), "{reply}");
    assert!(after < Duration::from_secs(6), "the slow upload was cut after {after:?}");
    assert_eq!(post(&a, "image/jpeg", &apple).0, 200, "the slot is free again");
}

#[test]
fn answers_carry_security_headers_and_no_server_paths() {
    let dir = Dir::new("hostile-headers");
    let index = demo_index(&dir);
    let (s, metrics_at) = start_with_metrics(&index, &dir.path, &["--max-body", "1M"]);
    let a = s.addr.clone();
    // The page may run its own script and style only: named by hash.
    let r = ureq::get(&format!("http://{a}/")).call().unwrap();
    let csp = r.header("content-security-policy").unwrap().to_string();
    let page = r.into_string().unwrap();
    let hash = |tag: &str| {
        let body = page.split(&format!("<{tag}>")).nth(1).unwrap().split(&format!("</{tag}>")).next().unwrap();
        use base64::Engine as _;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes());
        format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
    };
    for want in [
        format!("script-src {}", hash("script")),
        format!("style-src {}", hash("style")),
        "default-src 'none'".into(),
        "frame-ancestors 'none'".into(),
        "base-uri 'none'".into(),
        "form-action 'self'".into(),
    ] {
        assert!(csp.contains(&want), "{want} not in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // Every answer, refusals included, forbids sniffing and framing.
    let declared_big = b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n";
    let (refused, _) = raw_exchange(&a, declared_big, Duration::from_secs(5));
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    for path in ["/", "/healthz", "/nope"] {
        let r = match ureq::get(&format!("http://{a}{path}")).call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(r.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"), "{path}");
    }
    assert!(refused.to_lowercase().contains("x-content-type-options: nosniff"), "{refused}");
    // No file of the server's disk in an answer, unless the operator asks.
    let apple = photo("Test/Apple/f0_100.jpg");
    let (_, v) = post(&a, "image/jpeg", &apple);
    assert!(!v.to_string().contains(index.parent().unwrap().to_str().unwrap()), "{v}");
    assert!(v["neighbours"].as_array().unwrap().iter().all(|n| n.get("path").is_none()), "{v}");
    let shown = start(&index, &dir.path, &["--show-paths"]);
    let (_, v) = post(&shown.addr, "image/jpeg", &apple);
    let paths: Vec<&Value> = v["neighbours"].as_array().unwrap().iter().map(|n| &n["path"]).collect();
    assert!(paths.iter().all(|p| p.as_str().is_some_and(|p| p.ends_with(".jpg"))), "{paths:?}");
    // The counts live on their own address only.
    assert_eq!(get(&a, "/metrics").0, 404);
    assert_eq!(get(&metrics_at, "/metrics").0, 200);
    assert_eq!(get(&metrics_at, "/v1/identify").0, 404, "the metrics address serves nothing else");
}
