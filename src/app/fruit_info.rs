//! What the app tells a user about a fruit: a table from dataset labels
//! to common name, variety, scientific name, family and a one-line
//! description. The built-in table is `src/fruit_info.csv` (its header
//! comment documents the columns and sources); `--info FILE` replaces it.
//!
//! A label such as `Apple Golden 2` is matched by dropping its trailing
//! number, then taking the row whose label is the longest whole-word,
//! case-insensitive prefix of the rest (`Apple Golden`, else `Apple`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The built-in table.
pub const BUILTIN: &str = include_str!("fruit_info.csv");

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub label: String,
    pub common_name: String,
    pub variety: String,
    pub scientific_name: String,
    pub family: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// Rows with their label as lowercase words, longest label first.
    rows: Vec<(Vec<String>, Info)>,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_lowercase).collect()
}

impl Table {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, Path::new("src/fruit_info.csv")).expect("the built-in fruit table parses")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Input { path: path.to_path_buf(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses a table; the error names the file and the line.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut reader =
            csv::ReaderBuilder::new().comment(Some(b'#')).trim(csv::Trim::All).from_reader(text.as_bytes());
        let mut rows = Vec::new();
        for record in reader.deserialize::<Info>() {
            let info = record.map_err(|e| Error::Input {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("not a fruit information table: {e}")),
            })?;
            if info.label.trim().is_empty() {
                return Err(Error::Input {
                    path: path.to_path_buf(),
                    source: std::io::Error::other("a row has no label"),
                });
            }
            rows.push((words(&info.label), info));
        }
        rows.sort_by_key(|(w, _)| std::cmp::Reverse(w.len()));
        Ok(Self { rows })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row for a dataset label (see the module doc), if any.
    pub fn lookup(&self, label: &str) -> Option<&Info> {
        let mut w = words(label);
        if w.last().is_some_and(|x| x.chars().all(|c| c.is_ascii_digit())) {
            w.pop();
        }
        self.rows.iter().find(|(row, _)| row.len() <= w.len() && w[..row.len()] == row[..]).map(|(_, info)| info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "# a comment\nlabel,common_name,variety,scientific_name,family,description\n\
        Apple,Apple,,Malus domestica,Rosaceae,An apple.\n\
        Apple Golden,Apple,Golden Delicious,Malus domestica,Rosaceae,\"Yellow, sweet.\"\n";

    #[test]
    fn longest_word_prefix_wins() {
        let t = Table::parse(TABLE, Path::new("t.csv")).unwrap();
        assert_eq!(t.lookup("Apple Golden 2").unwrap().variety, "Golden Delicious");
        assert_eq!(t.lookup("apple golden").unwrap().description, "Yellow, sweet.");
        assert_eq!(t.lookup("Apple Red 1").unwrap().variety, "");
        assert!(t.lookup("Applesauce").is_none(), "whole words only");
        assert!(t.lookup("Kiwi").is_none());
    }

    #[test]
    fn builtin_table_covers_the_sample() {
        let t = Table::builtin();
        for label in ["Apple", "Kiwi", "Lemon", "Lime", "Orange"] {
            assert!(t.lookup(label).is_some(), "{label}");
        }
    }

    #[test]
    fn a_bad_table_names_its_file() {
        let e = Table::parse("label,common_name\nApple,Apple\n", Path::new("mine.csv")).unwrap_err();
        assert!(format!("{e:#}").contains("mine.csv"), "{e:#}");
    }
}
