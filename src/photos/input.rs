//! What to featurise, with every file accounted for: the files under a
//! folder or an `s3://bucket/prefix`, or the keys of a list.
//!
//! - A file whose extension names an image format ([`crate::image::format`],
//!   decoded here or not) is an [`Item`]: it will be featurised or rejected
//!   with a reason (an `.avif` is rejected naming AVIF). Any other file is
//!   counted as "not an image" and listed in the summary.
//! - Order: byte order of each file's path relative to the folder, with `/`
//!   between folders; S3 lists keys in that order, and local folders are
//!   sorted the same way, so `Apple Braeburn/…` comes before `Apple/…`
//!   (`' '` < `'/'`) wherever the photos live.
//! - A key list is taken in its own order; a key named again is dropped
//!   (and counted); a line that is no location is an error naming the line.
//!
//! Labels follow the Fruits-360 layout `<root>/[Training|Test]/<Label>/<file>`:
//! the label is the parent folder's name, the split the folder above it when
//! that is `Training` or `Test`.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use crate::error::{Error, Param, Result};
use crate::image::format::is_image_name;
use crate::storage::{Listed, Location, Storage};

/// Split folder names of the Fruits-360 layout.
pub const SPLITS: [&str; 2] = ["Training", "Test"];

/// One image to featurise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where to read it; its string form names the row in the output.
    pub location: Location,
    pub label: Option<String>,
    pub split: Option<String>,
}

impl Item {
    pub fn new(location: Location) -> Self {
        let text = location.to_string();
        let mut folders = text.rsplit('/').skip(1).filter(|s| !s.is_empty());
        let label = folders.next().map(str::to_string);
        let split = folders.next().filter(|s| SPLITS.contains(s)).map(str::to_string);
        Self { location, label, split }
    }

    /// The row's `path`: the location as given (a local path or `s3://…`).
    pub fn name(&self) -> String {
        self.location.to_string()
    }
}

/// What an input holds.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The images, in the order above, each once.
    pub items: Vec<Item>,
    /// Files whose names are no image format: not read, counted.
    pub not_images: Vec<String>,
    /// Keys a list named again after their first line (dropped).
    pub duplicates: usize,
}

impl Inventory {
    fn from_listing(root: &str, files: Vec<Listed>) -> Result<Self> {
        let mut inv = Inventory::default();
        for f in files {
            if is_image_name(&f.location.file_name()) {
                inv.items.push(Item::new(f.location));
            } else {
                inv.not_images.push(f.location.to_string());
            }
        }
        if inv.items.is_empty() {
            return Err(Error::NoImages {
                input: root.to_string(),
                detail: format!("{} files, none named as an image", inv.not_images.len()),
            });
        }
        Ok(inv)
    }
}

/// Every file under `loc` (a folder, or an `s3://bucket/prefix`), sorted
/// by its path relative to `loc` (see the module doc).
pub fn list_location(storage: &Storage, loc: &Location) -> Result<Inventory> {
    match loc {
        Location::Local(root) => {
            let meta = std::fs::metadata(root).map_err(|e| Error::Input { path: root.clone(), source: e })?;
            if !meta.is_dir() {
                return Err(Error::invalid(Param::Input, format!("{} is not a folder", root.display())));
            }
            Inventory::from_listing(&root.display().to_string(), storage.list(loc)?)
        }
        Location::S3 { bucket, key } => {
            // A prefix names a folder: `Training` must not match `TrainingOld/`.
            let key = if key.is_empty() || key.ends_with('/') { key.clone() } else { format!("{key}/") };
            let folder = Location::S3 { bucket: bucket.clone(), key };
            let files = storage.list(&folder)?;
            Inventory::from_listing(&folder.to_string(), files)
        }
    }
}

/// The locations listed one per line in `source` (a file, or `-` for
/// stdin), in the order given. Blank lines are skipped. Names are not
/// filtered by extension: what the user lists is what they want, and a
/// non-image is rejected with its reason.
pub fn read_key_list(source: &Path) -> Result<Inventory> {
    let err = |e| Error::Input { path: source.to_path_buf(), source: e };
    let reader: Box<dyn BufRead> = if source == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(source).map_err(err)?))
    };
    let mut inv = Inventory::default();
    let mut seen = HashSet::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let bad = |reason: String| Error::KeyList { path: source.to_path_buf(), line: n + 1, reason };
        let line = line.map_err(err)?;
        let line = String::from_utf8(line).map_err(|_| bad("is not UTF-8 text".into()))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let location = parse_key(line).map_err(bad)?;
        if seen.insert(location.clone()) {
            inv.items.push(Item::new(location));
        } else {
            inv.duplicates += 1;
        }
    }
    if inv.items.is_empty() {
        return Err(Error::NoImages { input: source.display().to_string(), detail: "the list is empty".into() });
    }
    Ok(inv)
}

/// One key-list line as a location of one file.
fn parse_key(line: &str) -> std::result::Result<Location, String> {
    let location: Location = line.parse()?;
    match &location {
        Location::S3 { key, .. } if key.is_empty() || key.ends_with('/') => {
            Err(format!("'{line}' names a bucket or folder, not an object"))
        }
        Location::Local(p) if p.as_os_str().is_empty() => Err("empty path".into()),
        _ => Ok(location),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_split_from_fruits360_layout() {
        let it = Item::new(Location::Local("data/fruits-360/Training/Apple Braeburn/r_1_100.jpg".into()));
        assert_eq!(it.label.as_deref(), Some("Apple Braeburn"));
        assert_eq!(it.split.as_deref(), Some("Training"));
        let it = Item::new("s3://b/photos/Kiwi/k.jpg".parse().unwrap());
        assert_eq!(it.label.as_deref(), Some("Kiwi"));
        assert_eq!(it.split, None);
        let it = Item::new(Location::Local("k.jpg".into()));
        assert_eq!((it.label, it.split), (None, None));
    }

    #[test]
    fn key_lines_name_one_file() {
        assert!(parse_key("s3:///x.jpg").unwrap_err().contains("no bucket"));
        assert!(parse_key("s3://bucket").unwrap_err().contains("not an object"));
        assert!(parse_key("s3://bucket/photos/").unwrap_err().contains("not an object"));
        assert_eq!(parse_key("s3://b/k.jpg").unwrap(), Location::S3 { bucket: "b".into(), key: "k.jpg".into() });
        assert_eq!(parse_key("a b.jpg").unwrap(), Location::Local("a b.jpg".into()));
    }
}
