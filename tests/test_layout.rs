//! The shape of the code base: module dependencies form no circle, and no
//! function grows into a wall of code. Parsed with `syn`, as rustc sees
//! the files (not by grepping), in both crates: the library (`src/lib.rs`)
//! and the binary (`src/main.rs`, `src/cli.rs`, `src/cmd/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

use crate::util::repo;

/// A file of `src/` and the module path it defines, e.g.
/// `src/engine/cpu/gemm.rs` → `engine::cpu::gemm` (lib crate).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    crate_name: &'static str,
}

/// `src/`, or `FRUITS_LAYOUT_SRC` to check another tree's (an older
/// commit's, to see this test fail there).
fn src_dir() -> PathBuf {
    std::env::var_os("FRUITS_LAYOUT_SRC").map(PathBuf::from).unwrap_or_else(|| repo().join("src"))
}

fn source_files() -> Vec<SourceFile> {
    let src = src_dir();
    let mut out = Vec::new();
    for entry in walkdir(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let last = parts.pop().unwrap();
        let stem = last.trim_end_matches(".rs").to_string();
        let bin = parts.first().map(String::as_str) == Some("cmd") || stem == "main" || stem == "cli";
        if !matches!(stem.as_str(), "mod" | "lib" | "main") {
            parts.push(stem);
        }
        out.push(SourceFile { path: entry, module: parts, crate_name: if bin { "bin" } else { "lib" } });
    }
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Collects every path a file names, resolved to an absolute module path
/// where it starts with `crate`, `super`, `self` or a child module's name.
struct Paths<'a> {
    /// The module of the file plus the inline modules we are inside.
    here: Vec<String>,
    children: &'a BTreeSet<String>,
    found: Vec<Vec<String>>,
}

impl Paths<'_> {
    fn resolve(&mut self, segs: &[String]) {
        let Some(first) = segs.first() else { return };
        let mut base = self.here.clone();
        let mut rest = segs;
        match first.as_str() {
            "crate" => {
                base.clear();
                rest = &segs[1..];
            }
            "self" => rest = &segs[1..],
            "super" => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            name if self.children.contains(name) => {}
            _ => return, // an external crate, a prelude item or a local name
        }
        let mut abs = base;
        abs.extend(rest.iter().cloned());
        self.found.push(abs);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut segs = prefix.clone();
                if n.ident != "self" {
                    segs.push(n.ident.to_string());
                }
                self.resolve(&segs);
            }
            syn::UseTree::Rename(r) => {
                let mut segs = prefix.clone();
                segs.push(r.ident.to_string());
                self.resolve(&segs);
            }
            syn::UseTree::Glob(_) => {
                let segs = prefix.clone();
                self.resolve(&segs);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test")))
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) || m.content.is_none() {
            return; // tests may reach anywhere; `mod x;` only declares
        }
        self.here.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.here.pop();
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segs);
        syn::visit::visit_path(self, p);
    }
}

/// Module dependency graph of one crate: file module → file modules it uses.
fn graph(files: &[&SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let name = |m: &[String]| if m.is_empty() { "(root)".to_string() } else { m.join("::") };
    let mut g = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f.path).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.path.display()));
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == f.module.len() + 1 && m.starts_with(&f.module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let mut v = Paths { here: f.module.clone(), children: &children, found: Vec::new() };
        v.visit_file(&ast);
        let deps: &mut BTreeSet<String> = g.entry(name(&f.module)).or_default();
        for path in v.found {
            // The longest file module the path starts with.
            let target = (0..=path.len()).rev().map(|n| &path[..n]).find(|p| modules.contains(*p));
            if let Some(t) = target {
                if t != f.module.as_slice() && !t.is_empty() {
                    deps.insert(name(t));
                }
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w.as_str()) {
                    let iw = self.index[w.as_str()];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), out: vec![] };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn module_dependencies_have_no_cycle() {
    let files = source_files();
    for krate in ["lib", "bin"] {
        let these: Vec<&SourceFile> = files.iter().filter(|f| f.crate_name == krate).collect();
        let g = graph(&these);
        assert!(g.len() > 3, "{krate}: found {} modules, expected more", g.len());
        let found = cycles(&g);
        let shown: Vec<String> = found
            .iter()
            .map(|c| {
                let edges: Vec<String> = c
                    .iter()
                    .flat_map(|m| g[m].iter().filter(|d| c.contains(d)).map(move |d| format!("{m} -> {d}")))
                    .collect();
                edges.join(", ")
            })
            .collect();
        assert!(found.is_empty(), "{krate} crate: module cycles:\n  {}", shown.join("\n  "));
    }
}

/// `g` with every module replaced by its folder at `depth` (`engine::cpu::gemm`
/// → `engine` at depth 1, `engine::cpu` at depth 2; a module shallower than
/// that stays itself), edges inside one folder dropped.
fn folders(g: &BTreeMap<String, BTreeSet<String>>, depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let folder = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in g {
        let from = folder(m);
        let entry = out.entry(from.clone()).or_default();
        entry.extend(deps.iter().map(|d| folder(d)).filter(|d| *d != from));
    }
    out
}

/// Which modules of `from` use which of `to`, for a failure message.
fn edges_between(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Vec<String> {
    let inside = |m: &str, f: &str| m == f || m.starts_with(&format!("{f}::"));
    g.iter()
        .filter(|(m, _)| inside(m, from))
        .flat_map(|(m, deps)| deps.iter().filter(|d| inside(d, to)).map(move |d| format!("{m} -> {d}")))
        .collect()
}

/// The rooms of `src/` depend on each other one way: no cycle between
/// folders at any depth (`features` ↔ `part`, `engine::cpu` ↔
/// `engine::cuda`), and the directions the design names.
#[test]
fn folders_have_no_cycle_and_keep_their_directions() {
    let files = source_files();
    let lib: Vec<&SourceFile> = files.iter().filter(|f| f.crate_name == "lib").collect();
    let g = graph(&lib);
    for depth in 1..=3 {
        let fg = folders(&g, depth);
        let found = cycles(&fg);
        let mut shown = Vec::new();
        for c in &found {
            for a in c {
                for b in c.iter().filter(|b| fg[a].contains(*b)) {
                    shown.push(format!("{a} -> {b}: {}", edges_between(&g, a, b).join(", ")));
                }
            }
        }
        assert!(found.is_empty(), "folder cycles at depth {depth}:\n  {}", shown.join("\n  "));
    }
    // (from, to, why): edges the design forbids even without a cycle.
    let forbidden = [
        ("model", "engine", "the engines run the model's plan; the model knows no engine"),
        ("pca", "app", "the PCA knows nothing of the app"),
        ("app", "pca::job", "the app reads parts through part::dataset, not the PCA's job"),
        ("pca", "features", "the PCA reads parts, not the featurize job"),
        ("part", "features", "a part is what features write, not how"),
        ("part", "pca", "a part holds no PCA"),
        ("storage", "part", "storage moves bytes, it knows no part"),
        ("photos", "features", "photos and shards are read by featurize, they know nothing of it"),
        ("part", "photos", "a part is any unit a task writes, shards among them"),
    ];
    for (from, to, why) in forbidden {
        let found = edges_between(&g, from, to);
        assert!(found.is_empty(), "{from} must not use {to} ({why}):\n  {}", found.join("\n  "));
    }
}

/// The folder check sees what it must: a cycle made only of edges between
/// different files of two folders is one folder cycle.
#[test]
fn the_folder_check_sees_folder_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a::x".into()).or_default().insert("b::y".into());
    g.entry("b::z".into()).or_default().insert("a::w".into());
    g.entry("b::y".into()).or_default();
    g.entry("a::w".into()).or_default();
    assert!(cycles(&g).is_empty(), "no cycle between files");
    assert_eq!(cycles(&folders(&g, 1)), vec![vec!["a".to_string(), "b".into()]]);
    assert_eq!(edges_between(&g, "a", "b"), vec!["a::x -> b::y".to_string()]);
}

/// The analysis sees what it must: a known edge, and a cycle it is shown.
#[test]
fn the_cycle_check_sees_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    let files = source_files();
    let lib: Vec<&SourceFile> = files.iter().filter(|f| f.crate_name == "lib").collect();
    let g = graph(&lib);
    assert!(g["features::pipeline"].contains("engine::model"), "{:?}", g["features::pipeline"]);
    assert!(g["storage::s3"].contains("storage::region"), "{:?}", g["storage::s3"]);
}

/// Longest function allowed, in lines: a function that reads as a sequence
/// of named steps fits on a screen. SIMD kernels are exempt (their length
/// is unrolled arithmetic, not logic).
const MAX_FN_LINES: usize = 70;
const EXEMPT: [&str; 2] = ["src/engine/cpu/gemm.rs", "src/engine/cpu/depthwise.rs"];

#[test]
fn no_function_is_a_wall_of_code() {
    struct Fns {
        long: Vec<(String, usize)>,
    }
    impl<'ast> Visit<'ast> for Fns {
        fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
            self.check(&f.sig.ident, &f.block);
            syn::visit::visit_item_fn(self, f);
        }
        fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
            self.check(&f.sig.ident, &f.block);
            syn::visit::visit_impl_item_fn(self, f);
        }
        fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
            if !is_cfg_test(&m.attrs) {
                syn::visit::visit_item_mod(self, m);
            }
        }
    }
    impl Fns {
        fn check(&mut self, name: &syn::Ident, block: &syn::Block) {
            use syn::spanned::Spanned;
            let span = block.span();
            let lines = span.end().line - span.start().line + 1;
            if lines > MAX_FN_LINES {
                self.long.push((name.to_string(), lines));
            }
        }
    }
    let mut long = Vec::new();
    for f in source_files() {
        let rel = format!("src/{}", f.path.strip_prefix(src_dir()).unwrap().to_string_lossy());
        if EXEMPT.contains(&rel.as_str()) {
            continue;
        }
        let ast = syn::parse_file(&std::fs::read_to_string(&f.path).unwrap()).unwrap();
        let mut v = Fns { long: Vec::new() };
        v.visit_file(&ast);
        long.extend(v.long.into_iter().map(|(n, l)| format!("{rel}: {n} ({l} lines)")));
    }
    assert!(long.is_empty(), "functions over {MAX_FN_LINES} lines:\n  {}", long.join("\n  "));
}

/// Whether a string literal names a command-line flag (`--k`, `--dtype`).
fn names_a_flag(s: &str) -> bool {
    s.match_indices("--").any(|(i, _)| {
        let before = s[..i].chars().last();
        let after = s[i + 2..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-') && after.is_some_and(|c| c.is_ascii_lowercase())
    })
}

/// The library knows nothing of the command line: no string of its code
/// names a flag (the CLI words its errors: src/cmd/mod.rs, `message`).
/// Doc comments and clap's attributes may, and tests may.
#[test]
fn library_strings_name_no_flag() {
    /// NVRTC's own options, not ours.
    const NOT_OURS: [&str; 2] = ["--gpu-architecture=", "--std=c++14"];
    struct Strings {
        found: Vec<String>,
    }
    impl Strings {
        fn check(&mut self, s: &str) {
            if names_a_flag(s) && !NOT_OURS.iter().any(|n| s.starts_with(n)) {
                self.found.push(s.to_string());
            }
        }
    }
    impl<'ast> Visit<'ast> for Strings {
        fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}
        fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
            if !is_cfg_test(&m.attrs) {
                syn::visit::visit_item_mod(self, m);
            }
        }
        fn visit_lit_str(&mut self, l: &'ast syn::LitStr) {
            self.check(&l.value());
        }
        fn visit_macro(&mut self, m: &'ast syn::Macro) {
            // format!, eprintln!, ...: their arguments are expressions.
            use syn::punctuated::Punctuated;
            if let Ok(args) = m.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated) {
                for a in &args {
                    self.visit_expr(a);
                }
            }
        }
    }
    let mut found = Vec::new();
    for f in source_files().into_iter().filter(|f| f.crate_name == "lib") {
        let ast = syn::parse_file(&std::fs::read_to_string(&f.path).unwrap()).unwrap();
        let mut v = Strings { found: Vec::new() };
        v.visit_file(&ast);
        found.extend(v.found.into_iter().map(|s| format!("{}: {s:?}", f.path.display())));
    }
    assert!(found.is_empty(), "library strings naming a flag:\n  {}", found.join("\n  "));
    // The check sees what it looks for.
    assert!(names_a_flag("--k must be at least 1") && names_a_flag("pass --weights PATH"));
    assert!(!names_a_flag("a -- b") && !names_a_flag("x86_64--linux") && !names_a_flag("2026-12--04"));
}
