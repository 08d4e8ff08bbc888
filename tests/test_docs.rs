//! The docs cannot drift from the binary: every `fruits` command line in a
//! shell block of README.md and docs/*.md goes through the real parser
//! (`FRUITS_PARSE_ONLY=1`: parse, then exit), and the cheap local ones run
//! for real, in the order each page gives them, in a scratch folder holding
//! the 19 sample photos where the pages say `fruits-360/`.

use std::path::{Path, PathBuf};

use crate::util::{copy_tree, fruits, repo, sample_dir, Dir};

/// One command from the docs: where it is, and its words after `fruits`.
#[derive(Debug)]
struct DocCommand {
    at: String,
    args: Vec<String>,
}

/// The pages a newcomer reads.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The `fruits …` lines (and `cargo run --release -- …`) inside ``` blocks
/// of `page`, continuation lines joined, comments and redirections cut.
fn commands(page: &Path) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(page).unwrap();
    let name = page.strip_prefix(repo()).unwrap().display().to_string();
    let (mut out, mut in_block) = (Vec::new(), false);
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let mut full = line.trim().to_string();
        while in_block && full.ends_with('\\') {
            full.pop();
            full.push(' ');
            full.push_str(lines.next().map_or("", |(_, l)| l.trim()));
        }
        let rest =
            ["fruits ", "target/release/fruits ", "cargo run --release -- "].iter().find_map(|p| full.strip_prefix(p));
        let Some(rest) = rest.filter(|_| in_block) else { continue };
        let words = shlex::split(rest).unwrap_or_else(|| panic!("{name}:{}: unbalanced quotes: {full}", i + 1));
        let args: Vec<String> = words.into_iter().take_while(|w| !w.starts_with('#') && w != ">" && w != "|").collect();
        out.push(DocCommand { at: format!("{name}:{}", i + 1), args });
    }
    out
}

#[test]
fn every_documented_command_parses() {
    let all: Vec<DocCommand> = pages().iter().flat_map(|p| commands(p)).collect();
    assert!(all.len() >= 30, "found only {} commands: is the extraction broken?", all.len());
    let mut bad = Vec::new();
    for c in &all {
        let out = fruits().env("FRUITS_PARSE_ONLY", "1").args(&c.args).output().unwrap();
        if !out.status.success() {
            bad.push(format!("{}: fruits {}\n{}", c.at, c.args.join(" "), String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(bad.is_empty(), "{} documented commands do not parse:\n{}", bad.len(), bad.join("\n"));
    // The parse-only switch still refuses what the parser refuses.
    let out = fruits().env("FRUITS_PARSE_ONLY", "1").args(["featurize", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Subcommands cheap enough to run on the sample (no network, no server).
fn runs_for_real(args: &[String]) -> bool {
    let local = !args.iter().any(|a| a.starts_with("s3://"));
    let cheap = matches!(
        (args.first().map(String::as_str), args.get(1).map(String::as_str)),
        (Some("featurize" | "pack" | "pca" | "index" | "identify" | "info" | "regions" | "list" | "demo"), _)
            | (Some("parts"), Some("list"))
            | (Some("weights"), Some("init"))
    );
    local && cheap
}

/// A scratch folder laid out as the pages assume.
fn scratch(dir: &Dir) -> PathBuf {
    let root = dir.join("work");
    for at in ["fruits-360", "path/to/fruits-360"] {
        copy_tree(&sample_dir(), &root.join(at));
    }
    let photo = sample_dir().join("Test/Apple/f0_100.jpg");
    std::fs::copy(&photo, root.join("photo.jpg")).unwrap();
    std::fs::write(root.join("list.txt"), format!("{}\n", photo.display())).unwrap();
    root
}

#[test]
fn cheap_documented_commands_run_on_the_sample() {
    let mut ran = 0;
    // `fruits info --kernels` needs NVRTC: the wheel the tests install.
    let nvrtc = crate::test_gpu::nvrtc_lib_dir();
    for page in pages() {
        let work = scratch(&Dir::new(&format!("docs-run-{}", page.file_stem().unwrap().to_string_lossy())));
        for c in commands(&page).into_iter().filter(|c| runs_for_real(&c.args)) {
            let mut args = c.args.clone();
            // No hub here: the pinned weights cannot be fetched.
            if matches!(args[0].as_str(), "featurize" | "identify" | "demo") && !args.iter().any(|a| a == "--weights") {
                args.extend(["--weights".to_string(), "random:0".to_string()]);
            }
            if args[0] == "featurize" {
                args.push("--quiet".into());
            }
            let out = fruits().current_dir(&work).env("LD_LIBRARY_PATH", &nvrtc).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{}: fruits {} (run in {}) failed:\n{}",
                c.at,
                args.join(" "),
                work.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 10, "only {ran} documented commands ran for real");
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to
/// hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every `[text](FILE.md#anchor)` link between the pages lands on a heading.
#[test]
fn links_between_pages_land_on_headings() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            let Some((file, frag)) = link.split_once('#') else { continue };
            if file.contains("://") {
                continue;
            }
            let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let Ok(body) = std::fs::read_to_string(&target) else {
                bad.push(format!("{}: {link}: no such file", page.display()));
                continue;
            };
            let anchors: Vec<String> =
                body.lines().filter_map(|l| l.strip_prefix('#')).map(|h| anchor(h.trim_start_matches('#'))).collect();
            if !anchors.iter().any(|a| a == frag) {
                bad.push(format!("{}: {link}: no heading with that anchor", page.display()));
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} links checked");
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}
