//! What to featurise: the image files under a folder, or a list of paths.
//!
//! Labels follow the Fruits-360 layout `<root>/[Training|Test]/<Label>/<file>`:
//! the label is the parent folder's name, the split the folder above it when
//! that is `Training` or `Test`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File extensions taken as images (case-insensitive); other files are skipped.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Split folder names of the Fruits-360 layout.
pub const SPLITS: [&str; 2] = ["Training", "Test"];

/// One image to featurise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where to read it, and how it is named in the output.
    pub path: PathBuf,
    pub label: Option<String>,
    pub split: Option<String>,
}

impl Item {
    pub fn new(path: PathBuf) -> Self {
        let parent = path.parent();
        let name = |p: Option<&Path>| p.and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
        let label = name(parent);
        let split = name(parent.and_then(Path::parent)).filter(|s| SPLITS.contains(&s.as_str()));
        Self { path, label, split }
    }
}

pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Every image file under `root`, in byte order of their paths.
pub fn list_folder(root: &Path) -> Result<Vec<Item>> {
    let meta = std::fs::metadata(root).map_err(|e| Error::Input { path: root.to_path_buf(), source: e })?;
    if !meta.is_dir() {
        return Err(Error::Input {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a folder (use --keys for a list)"),
        });
    }
    let paths = crate::storage::walk_files(root, &|name| is_image_name(Path::new(name)))?;
    if paths.is_empty() {
        return Err(Error::NoImages(root.to_path_buf()));
    }
    Ok(paths.into_iter().map(Item::new).collect())
}

/// Every image under `loc` (a folder, or an `s3://bucket/prefix`), in byte order.
pub fn list_location(storage: &crate::storage::Storage, loc: &crate::storage::Location) -> Result<Vec<Item>> {
    use crate::storage::Location;
    match loc {
        Location::Local(p) => list_folder(p),
        Location::S3 { bucket, key } => {
            // A prefix names a folder: `Training` must not match `TrainingOld/`.
            let key = if key.is_empty() || key.ends_with('/') { key.clone() } else { format!("{key}/") };
            let folder = Location::S3 { bucket: bucket.clone(), key };
            let found = storage.list(&folder, &|name| is_image_name(Path::new(name)))?;
            if found.is_empty() {
                return Err(Error::NoImages(PathBuf::from(folder.to_string())));
            }
            Ok(found.into_iter().map(|l| Item::new(PathBuf::from(l.to_string()))).collect())
        }
    }
}

/// Paths listed one per line in `source` (a file, or `-` for stdin), in the
/// order given. Blank lines are skipped; names are not filtered by extension:
/// what the user lists is what they want, and a non-image is reported.
pub fn read_key_list(source: &Path) -> Result<Vec<Item>> {
    let err = |e| Error::Input { path: source.to_path_buf(), source: e };
    let reader: Box<dyn BufRead> = if source == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(source).map_err(err)?))
    };
    let mut items = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(err)?;
        let line = line.trim_end_matches(['\r', '\n']);
        if !line.trim().is_empty() {
            items.push(Item::new(PathBuf::from(line)));
        }
    }
    if items.is_empty() {
        return Err(Error::NoImages(source.to_path_buf()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_split_from_fruits360_layout() {
        let it = Item::new(PathBuf::from("data/fruits-360/Training/Apple Braeburn/r_1_100.jpg"));
        assert_eq!(it.label.as_deref(), Some("Apple Braeburn"));
        assert_eq!(it.split.as_deref(), Some("Training"));
        let it = Item::new(PathBuf::from("photos/Kiwi/k.jpg"));
        assert_eq!(it.label.as_deref(), Some("Kiwi"));
        assert_eq!(it.split, None);
    }

    #[test]
    fn image_names_by_extension() {
        assert!(is_image_name(Path::new("a/b.JPG")));
        assert!(is_image_name(Path::new("a/b.tiff")));
        assert!(!is_image_name(Path::new("a/notes.txt")));
        assert!(!is_image_name(Path::new("a/jpg")));
    }
}
