//! The S3 side against a second, independent S3-compatible server,
//! `s3s-fs`, which (unlike moto) checks request signatures and answers no
//! bucket location: the README's commands, and bad credentials stopping
//! the run with a clear message.

use crate::util::{read_parquet, run, sample_dir, stderr, Dir, S3sServer};

fn server_with_photos(dir: &Dir) -> S3sServer {
    let s3 = S3sServer::start(dir);
    s3.helper("bucket", &["fruits-photos", "eu-west-1"]);
    s3.helper("bucket", &["fruits-results", "eu-west-1"]);
    s3.helper("upload", &[sample_dir().to_str().unwrap(), "fruits-photos", "fruits-360/"]);
    s3
}

fn manifest(s3: &S3sServer, prefix: &str) -> serde_json::Value {
    let text = s3.helper("cat", &["fruits-results", &format!("{prefix}_fruits/part-00000.manifest.json")]);
    serde_json::from_str(&text).unwrap()
}

/// The README's S3 commands. The server answers no location for its
/// buckets: behind --s3-endpoint that means "the server's own region",
/// --region (here the default, eu-west-1), not us-east-1.
#[test]
fn readme_commands_against_a_server_that_checks_signatures() {
    let dir = Dir::new("s3s-readme");
    let s3 = server_with_photos(&dir);
    let mut cmd = s3.fruits();
    cmd.args(["featurize", "--weights", "random:3", "--quiet", "--input", "s3://fruits-photos/fruits-360/Training/"]);
    cmd.args(["--output", "s3://fruits-results/features/", "--region", "eu-west-1"]);
    let err = stderr(&run(cmd, 0));
    assert!(err.contains("featurised 14 of 14 images"), "{err}");
    let m = manifest(&s3, "features/");
    let rows = m["files"].as_array().unwrap().iter().find(|f| f["role"] == "rows").unwrap()["name"].clone();
    let local = dir.join("rows.parquet");
    s3.helper("get", &["fruits-results", &format!("features/{}", rows.as_str().unwrap()), local.to_str().unwrap()]);
    let pq = read_parquet(&local);
    assert_eq!(pq["rows"], 14);
    assert_eq!(pq["columns"]["path"][0], "s3://fruits-photos/fruits-360/Training/Apple/0_100.jpg");

    let mut fit = s3.fruits();
    fit.args([
        "pca",
        "fit",
        "--k",
        "3",
        "--features",
        "s3://fruits-results/features/",
        "--output",
        "s3://fruits-results/pca/",
    ]);
    assert!(stderr(&run(fit, 0)).contains("PCA of 14 rows from 1 parts (1 from statistics files,"));
    let mut tr = s3.fruits();
    tr.args(["pca", "transform", "--features", "s3://fruits-results/features/", "--model", "s3://fruits-results/pca/"]);
    tr.args(["--output", "s3://fruits-results/reduced/", "--plot"]);
    run(tr, 0);
    assert_eq!(manifest(&s3, "reduced/")["counts"]["rows"], 14);
    let mut list = s3.fruits();
    list.args(["list", "s3://fruits-photos/fruits-360/"]);
    assert_eq!(String::from_utf8(run(list, 0).stdout).unwrap().lines().count(), 19);
}

/// Wrong secret, unknown key id: the first request is refused and the run
/// stops at once, naming the bucket, never printing the credentials.
#[test]
fn bad_credentials_stop_the_run_with_a_clear_message() {
    let dir = Dir::new("s3s-creds");
    let s3 = server_with_photos(&dir);
    for (key, secret) in [(S3sServer::ACCESS_KEY, "not-the-secret"), ("no-such-key-id", S3sServer::SECRET_KEY)] {
        let mut cmd = s3.fruits_as(key, secret);
        cmd.args(["featurize", "--weights", "random:3", "--quiet", "--input", "s3://fruits-photos/fruits-360/Test/"]);
        cmd.args(["--output", "s3://fruits-results/features/"]);
        let err = stderr(&run(cmd, 1));
        assert!(
            err.contains("access to bucket fruits-results denied")
                || err.contains("access to bucket fruits-photos denied"),
            "{key}: {err}"
        );
        assert!(err.contains("check the credentials"), "{err}");
        assert!(!err.contains(secret) && !err.contains("test-secret-key"), "credentials leaked: {err}");
        assert_eq!(err.matches("fruits: error").count(), 1, "{err}");
        let mut list = s3.fruits_as(key, secret);
        list.args(["list", "s3://fruits-photos/fruits-360/"]);
        let err = stderr(&run(list, 1));
        assert!(err.contains("access to bucket fruits-photos denied"), "{err}");
    }
    assert!(!s3.root.join("fruits-results/features").exists(), "nothing written");
}
