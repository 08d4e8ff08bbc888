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
//! - Shards ([`super::shard`]): a folder or prefix of shards (`fruits
//!   pack`'s, or Parquet files with `path` and `content` columns another
//!   tool wrote, e.g. Spark's `binaryFile`), or a key list of `.parquet`
//!   files, is read as the photos inside, in the shards' order; a path
//!   packed again in a later shard is taken from there (counted as a
//!   duplicate).
//!
//! Labels follow the Fruits-360 layout `<root>/[Training|Test]/<Label>/<file>`:
//! the label is the parent folder's name, the split the folder above it when
//! that is `Training` or `Test` (a shard's own `label` and `split` win).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::shard::{Entry, Shard};
use crate::error::{Error, Param, Result};
use crate::image::format::is_image_name;
use crate::part::{folder, Role};
use crate::storage::{KeyRange, Listed, Location, Storage};

/// What to read photos from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Every file under a folder or `s3://bucket/prefix` (photos, or shards).
    Folder(Location),
    /// The locations listed in a file (`-`: stdin): photos, or shards.
    Keys(PathBuf),
}

/// The manifests' `kind` of a part that is a shard.
pub const SHARD_KIND: &str = "shards";

/// Split folder names of the Fruits-360 layout.
pub const SPLITS: [&str; 2] = ["Training", "Test"];

/// One image to featurise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where it was (loose, where to read it); its string form names the
    /// row in the output.
    pub location: Location,
    pub label: Option<String>,
    pub split: Option<String>,
    /// When it was last written, where the listing says.
    pub modified: Option<SystemTime>,
    /// Inside a shard: read from there, not from `location`.
    pub packed: Option<Packed>,
}

/// Where a photo sits in the inventory's shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// Index into [`Inventory::shards`].
    pub shard: usize,
    pub row_group: usize,
    pub row: usize,
}

impl Item {
    pub fn new(location: Location) -> Self {
        let text = location.to_string();
        let mut folders = text.rsplit('/').skip(1).filter(|s| !s.is_empty());
        let label = folders.next().map(str::to_string);
        let split = folders.next().filter(|s| SPLITS.contains(s)).map(str::to_string);
        Self { location, label, split, modified: None, packed: None }
    }

    /// A photo packed in shard `shard` of an inventory.
    fn packed(shard: usize, e: Entry) -> std::result::Result<Self, String> {
        // Spark's binaryFile names local files `file:/…`.
        let path = e.path.strip_prefix("file://").or_else(|| e.path.strip_prefix("file:")).unwrap_or(&e.path);
        let mut item = Item::new(path.parse()?);
        item.label = e.label.or(item.label);
        item.split = e.split.or(item.split);
        item.modified = e.modified;
        item.packed = Some(Packed { shard, row_group: e.row_group, row: e.row });
        Ok(item)
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
    /// Keys a list named again after their first line (dropped), or
    /// paths a later shard packed again.
    pub duplicates: usize,
    /// The shards the items are in, when they are packed.
    pub shards: Vec<Shard>,
}

impl Inventory {
    fn from_listing(root: &str, files: Vec<Listed>) -> Result<Self> {
        let inv = Self::sorted_out(files);
        if inv.items.is_empty() {
            return Err(Error::NoImages {
                input: root.to_string(),
                detail: format!("{} files, none named as an image", inv.not_images.len()),
            });
        }
        Ok(inv)
    }

    /// Listed files, as photos and files that are not images.
    fn sorted_out(files: Vec<Listed>) -> Self {
        let mut inv = Inventory::default();
        for f in files {
            if is_image_name(&f.location.file_name()) {
                let mut item = Item::new(f.location);
                item.modified = f.modified;
                inv.items.push(item);
            } else {
                inv.not_images.push(f.location.to_string());
            }
        }
        inv
    }
}

/// What `input` holds: its photos, loose or in shards.
pub fn take(storage: &Storage, input: &Input) -> Result<Inventory> {
    match input {
        Input::Folder(loc) => match shards_in(storage, loc)? {
            Some(shards) => from_shards(storage, shards),
            None => list_location(storage, loc),
        },
        Input::Keys(list) => {
            let listed = read_key_list(list)?;
            let is_shard = |it: &Item| it.location.file_name().ends_with(".parquet");
            match (listed.items.iter().all(is_shard), listed.items.iter().any(is_shard)) {
                (true, _) => from_shards(storage, listed.items.into_iter().map(|it| it.location).collect()),
                (false, false) => Ok(listed),
                (false, true) => Err(Error::corrupt(
                    list.display(),
                    "names both shards (.parquet) and photos: list one kind per run",
                )),
            }
        }
    }
}

/// The shards of a folder: its committed shard parts (`fruits pack`'s), or,
/// with no part and no photo at all, its `part-*.parquet` files (another
/// tool's, e.g. Spark's). `None`: a folder of photos.
fn shards_in(storage: &Storage, loc: &Location) -> Result<Option<Vec<Location>>> {
    if matches!(loc, Location::Local(p) if !p.is_dir()) {
        return Ok(None);
    }
    let f = folder::open(storage, loc)?;
    let packed: Vec<Location> =
        f.parts.iter().filter(|p| p.manifest.kind == SHARD_KIND).filter_map(|p| p.location(Role::Rows)).collect();
    if !packed.is_empty() {
        return Ok(Some(packed));
    }
    if f.parts.is_empty() && !f.foreign.is_empty() {
        let listed = storage.list(&folder::as_folder(loc))?;
        if !listed.iter().any(|l| is_image_name(&l.location.file_name())) {
            return Ok(Some(f.foreign));
        }
    }
    Ok(None)
}

/// The photos of `shards`, in order; a path packed again later is taken
/// from its last shard.
pub fn from_shards(storage: &Storage, shards: Vec<Location>) -> Result<Inventory> {
    let mut inv = Inventory::default();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut items: Vec<Option<Item>> = Vec::new();
    for (k, loc) in shards.iter().enumerate() {
        let shard = Shard::open(storage, loc)?;
        for e in shard.entries(storage)? {
            let (rg, row) = (e.row_group, e.row);
            let item =
                Item::packed(k, e).map_err(|why| Error::corrupt(loc, format!("row group {rg}, row {row}: {why}")))?;
            if let Some(earlier) = at.insert(item.location.to_string(), items.len()) {
                items[earlier] = None;
                inv.duplicates += 1;
            }
            items.push(Some(item));
        }
        inv.shards.push(shard);
    }
    inv.items = items.into_iter().flatten().collect();
    if inv.items.is_empty() {
        let input = shards.first().map(|l| l.to_string()).unwrap_or_default();
        return Err(Error::NoImages { input, detail: format!("{} shards, no photo in them", shards.len()) });
    }
    Ok(inv)
}

/// Every file under `loc` (a folder, or an `s3://bucket/prefix`), sorted
/// by its path relative to `loc` (see the module doc).
pub fn list_location(storage: &Storage, loc: &Location) -> Result<Inventory> {
    let (folder, files) = list_folder(storage, loc, &KeyRange::default())?;
    Inventory::from_listing(&folder.to_string(), files)
}

/// The photos of one slice of the folder `loc` (see
/// [`Storage::list_range`]); a slice may hold none.
pub fn list_slice(storage: &Storage, loc: &Location, range: &KeyRange) -> Result<Inventory> {
    let (_, files) = list_folder(storage, loc, range)?;
    Ok(Inventory::sorted_out(files))
}

/// The folders right inside the folder `loc`, relative to it.
pub fn list_folders(storage: &Storage, loc: &Location) -> Result<Vec<String>> {
    storage.folders(&as_folder_location(loc)?)
}

/// `loc` as a folder: a local folder that must exist, or an S3 prefix
/// ending in `/` (`Training` must not match `TrainingOld/`).
fn as_folder_location(loc: &Location) -> Result<Location> {
    match loc {
        Location::Local(root) => {
            let meta = std::fs::metadata(root).map_err(|e| Error::Input { path: root.clone(), source: e })?;
            if !meta.is_dir() {
                return Err(Error::invalid(Param::Input, format!("{} is not a folder", root.display())));
            }
            Ok(loc.clone())
        }
        Location::S3 { bucket, key } => {
            let key = if key.is_empty() || key.ends_with('/') { key.clone() } else { format!("{key}/") };
            Ok(Location::S3 { bucket: bucket.clone(), key })
        }
    }
}

fn list_folder(storage: &Storage, loc: &Location, range: &KeyRange) -> Result<(Location, Vec<Listed>)> {
    let folder = as_folder_location(loc)?;
    let files = storage.list_range(&folder, range)?;
    Ok((folder, files))
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
