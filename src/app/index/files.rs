//! An index on disk (or under an `s3://` prefix): three files.
//! - `index.json`: [`Meta`], how it was made;
//! - `vectors.safetensors`: `vectors` (rows × dim, unit rows), `mean`,
//!   optional `scale` and `components` (the [`Projection`]), all f32;
//! - `entries.parquet`: `path`, `label`, `class` per row, readable by any
//!   Parquet tool.
//!
//! Each file is staged under a hidden name and renamed into place, and
//! `index.json` goes last: a folder without it is not an index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, Int32Array, StringArray};
use arrow_schema::{DataType, Field, Schema};
use safetensors::tensor::{Dtype, TensorView};

use super::{Entry, Index, Meta, Projection};
use crate::error::{Error, Result};
use crate::part::schema::ParquetFile;
use crate::storage::files::{output_err, Staged};
use crate::storage::{Location, Storage};

/// The files, in the order they are written (`index.json` last).
pub const FILES: [&str; 3] = ["vectors.safetensors", "entries.parquet", "index.json"];

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An index file that does not hold what it should.
fn bad(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::corrupt(path.display(), detail.to_string())
}

/// Writes `index` into the local folder `dir`.
pub fn save(index: &Index, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| output_err(dir, e))?;
    let p = &index.projection;
    let (rows, dim, d) = (index.meta.rows, index.meta.dim, p.input_dim());
    let blobs: Vec<(&str, Vec<u8>, Vec<usize>)> = [
        Some(("vectors", f32_bytes(&index.vectors.to_rows()), vec![rows, dim])),
        Some(("mean", f32_bytes(&p.mean), vec![d])),
        p.scale.as_ref().map(|s| ("scale", f32_bytes(s), vec![d])),
        (!p.components.is_empty()).then(|| ("components", f32_bytes(&p.components), vec![dim, d])),
    ]
    .into_iter()
    .flatten()
    .collect();
    let views: Vec<(&str, TensorView)> = blobs
        .iter()
        .map(|(name, b, shape)| (*name, TensorView::new(Dtype::F32, shape.clone(), b).expect("consistent shape")))
        .collect();
    let staged = Staged::new(dir, FILES[0]);
    let bytes = safetensors::serialize(views, None).map_err(|e| output_err(&staged.tmp, e))?;
    crate::storage::files::write_file(&staged.tmp, &bytes)?;
    let mut written = vec![staged.commit()?];

    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("class", DataType::Int32, false),
    ]));
    let staged = Staged::new(dir, FILES[1]);
    let mut f = ParquetFile::create(&staged.tmp, schema, vec![])?;
    for chunk in index.entries.chunks(crate::part::schema::ROW_GROUP_ROWS) {
        let paths: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter().map(|e| e.path.as_str())));
        let labels: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter().map(|e| index.label(e.class))));
        let classes: ArrayRef = Arc::new(Int32Array::from_iter_values(chunk.iter().map(|e| e.class as i32)));
        f.write(vec![paths, labels, classes])?;
    }
    f.finish()?;
    written.push(staged.commit()?);

    let staged = Staged::new(dir, FILES[2]);
    let json = serde_json::to_vec_pretty(&index.meta).expect("the index metadata serialises");
    crate::storage::files::write_file(&staged.tmp, &json)?;
    written.push(staged.commit()?);
    Ok(written)
}

/// Reads the index in the local folder `dir`, checking that its files agree.
pub fn load(dir: &Path) -> Result<Index> {
    let json = dir.join(FILES[2]);
    let text = std::fs::read_to_string(&json).map_err(|e| Error::Input { path: json.clone(), source: e })?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::parse(json.display(), e))?;
    let path = dir.join(FILES[0]);
    let bytes = std::fs::read(&path).map_err(|e| Error::Input { path: path.clone(), source: e })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::parse(path.display(), e))?;
    let get = |name: &str| -> Result<Option<Vec<f32>>> {
        match st.tensor(name) {
            Ok(t) if t.dtype() == Dtype::F32 => {
                Ok(Some(t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()))
            }
            Ok(_) => Err(bad(&path, format!("{name} is not f32"))),
            Err(_) => Ok(None),
        }
    };
    let vectors = get("vectors")?.ok_or_else(|| bad(&path, "no tensor named vectors"))?;
    let mean = get("mean")?.ok_or_else(|| bad(&path, "no tensor named mean"))?;
    let projection = Projection { mean, scale: get("scale")?, components: get("components")?.unwrap_or_default() };
    let entries = read_entries(&dir.join(FILES[1]))?;
    let st_dim = st.tensor("vectors").map(|t| t.shape().get(1).copied().unwrap_or(0)).unwrap_or(0);
    if st_dim == 0 || vectors.len() % st_dim != 0 {
        return Err(bad(&path, "vectors is not a matrix"));
    }
    let vectors = super::search::Vectors::from_rows(&vectors, st_dim);
    let index = Index { meta, projection, vectors, entries };
    index.validate().map_err(|e| bad(dir, e))?;
    Ok(index)
}

fn read_entries(path: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for batch in crate::pca::files::read_table(path)? {
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(path, format!("no column {name}")));
        let paths = col("path")?;
        let paths = paths.as_string_opt::<i32>().ok_or_else(|| bad(path, "path is not a string"))?;
        let classes = col("class")?;
        let classes = classes.as_primitive_opt::<Int32Type>().ok_or_else(|| bad(path, "class is not int32"))?;
        if paths.null_count() + classes.null_count() > 0 {
            return Err(bad(path, "null path or class"));
        }
        for (p, c) in paths.iter().zip(classes.iter()) {
            let class = u32::try_from(c.unwrap_or(-1)).map_err(|_| bad(path, format!("negative class for {p:?}")))?;
            out.push(Entry { path: p.unwrap_or_default().to_string(), class });
        }
    }
    Ok(out)
}

/// Writes `index` to `dest` (a local folder, or an S3 prefix through
/// `scratch`); returns where its files went.
pub fn publish(storage: &Storage, index: &Index, dest: &Location, scratch: &Path) -> Result<Vec<String>> {
    match dest {
        Location::Local(dir) => Ok(save(index, dir)?.iter().map(|p| p.display().to_string()).collect()),
        Location::S3 { .. } => {
            let local = scratch.join("index");
            let mut shown = Vec::new();
            for (file, name) in save(index, &local)?.iter().zip(FILES) {
                let at = dest.join(name);
                storage.put_file(file, &at)?;
                shown.push(at.to_string());
            }
            Ok(shown)
        }
    }
}

/// Reads the index at `at` (S3: copied into `scratch` first).
pub fn open(storage: &Storage, at: &Location, scratch: &Path) -> Result<Index> {
    match at {
        Location::Local(dir) => load(dir),
        Location::S3 { .. } => {
            let dir = scratch.join("index");
            std::fs::create_dir_all(&dir)?;
            for name in FILES {
                let local = storage.localize(&at.join(name), scratch)?;
                std::fs::rename(&local, dir.join(name))?;
            }
            load(&dir)
        }
    }
}
