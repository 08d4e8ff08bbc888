//! `--report`: what a run did as one JSON object, for a cluster driver to
//! collect (rows, rejections by kind, time, device, host, weights, files).

use fruits::engine::Model;
use fruits::features::job::Report;
use fruits::part::Role;
use serde_json::{json, Value};

/// This machine's name, for reports ("which node did this").
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn featurize(report: &Report, model: &Model, part: u32) -> Value {
    let common = json!({
        "part": part,
        "host": host(),
        "device": model.describe(),
        "model": model.which.name(),
        "weights": model.weights_id,
    });
    let specific = match report {
        Report::Skipped(at, m) => {
            // What the earlier attempt did, from its manifest, so totals stay whole.
            let count = |k: &str| m.counts.get(k).copied().unwrap_or(0);
            json!({
                "status": "skipped",
                "manifest": at.to_string(),
                "attempt": m.attempt,
                "inputs": count("inputs"),
                "featurised": count("featurised"),
                "rejected": count("rejected"),
                "not_images": count("not_images"),
                "duplicates": count("duplicates"),
            })
        }
        Report::UpToDate(a) => json!({
            "status": "up-to-date",
            "held": a.held,
            "changed": a.changed,
            "deleted": a.deleted,
            "inputs": 0,
            "featurised": 0,
            "rejected": 0,
        }),
        Report::Done(done) => {
            let s = &done.streamed;
            let kinds: serde_json::Map<String, Value> =
                s.rejected_by_kind().iter().map(|(k, n)| (k.as_str().to_string(), json!(n))).collect();
            let file = |role| done.committed.location(role).map(|l| l.to_string());
            json!({
                "status": "done",
                "attempt": done.committed.manifest.attempt,
                "inputs": s.total(),
                "featurised": s.featurised,
                "rejected": s.rejected.len(),
                "rejected_by_kind": kinds,
                "not_images": done.not_images.len(),
                "duplicates": done.duplicates,
                "seconds": s.elapsed.as_secs_f64(),
                "images_per_s": s.images_per_sec(),
                "rows": file(Role::Rows),
                "errors": file(Role::Errors),
            })
        }
    };
    let mut out = common;
    if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), specific) {
        o.extend(extra);
    }
    out
}
