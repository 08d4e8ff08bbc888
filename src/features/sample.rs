//! The 19 real fruit photos shipped with the sources (Fruits-360 layout,
//! BSD licence: tests/data/LICENSE-opencv), compiled into the binary, so
//! `fruits demo` runs from an installed binary with no checkout at hand.

use std::path::Path;

use crate::error::Result;

/// (path in the Fruits-360 layout, bytes).
pub const FILES: &[(&str, &[u8])] = &[
    ("Test/Apple/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Test/Apple/f0_100.jpg")),
    ("Test/Kiwi/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Test/Kiwi/f0_100.jpg")),
    ("Test/Lemon/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Test/Lemon/f0_100.jpg")),
    ("Test/Lime/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Test/Lime/f0_100.jpg")),
    ("Test/Orange/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Test/Orange/f0_100.jpg")),
    ("Training/Apple/0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Apple/0_100.jpg")),
    ("Training/Apple/1_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Apple/1_100.jpg")),
    ("Training/Apple/2_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Apple/2_100.jpg")),
    ("Training/Kiwi/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Kiwi/f0_100.jpg")),
    ("Training/Kiwi/f1_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Kiwi/f1_100.jpg")),
    ("Training/Lemon/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Lemon/f0_100.jpg")),
    ("Training/Lemon/f1_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Lemon/f1_100.jpg")),
    ("Training/Lime/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Lime/f0_100.jpg")),
    ("Training/Lime/f1_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Lime/f1_100.jpg")),
    ("Training/Orange/0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Orange/0_100.jpg")),
    ("Training/Orange/1_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Orange/1_100.jpg")),
    ("Training/Orange/2_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Orange/2_100.jpg")),
    ("Training/Orange/f0_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Orange/f0_100.jpg")),
    ("Training/Orange/f1_100.jpg", include_bytes!("../../tests/data/fruits-360-sample/Training/Orange/f1_100.jpg")),
];

/// Writes the sample under `dir` (`dir/Training/Apple/0_100.jpg`, ...).
pub fn write_to(dir: &Path) -> Result<()> {
    for (name, bytes) in FILES {
        crate::storage::files::write_file(&dir.join(name), bytes)?;
    }
    Ok(())
}
