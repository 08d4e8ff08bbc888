//! The image formats `fruits` knows, in one table: which it decodes, the
//! file extensions that name them, and how to recognise their content.
//!
//! A file is taken as an image by its extension (any format below), then
//! decoded by its content: a JPEG named `.png` is still a JPEG. Formats
//! recognised but not decoded (AVIF, HEIF/HEIC, JPEG XL, ...) become
//! rejections that name the format.
//!
//! Why AVIF and HEIC are not decoded: no maintained crate decodes them
//! without a C library or an incompatible licence. The `image` crate's AVIF
//! decoder needs the system's libdav1d (not in Amazon Linux 2023's
//! repositories), `libheif-rs` needs libheif and its codecs, and the pure
//! Rust `zenavif` is AGPL-3.0 (this crate is MIT OR Apache-2.0). Users get a
//! clear rejection and can convert first.

use image::ImageFormat;

/// One image format.
#[derive(Debug)]
pub struct Format {
    /// How messages name it.
    pub name: &'static str,
    /// Lower-case file extensions, without the dot.
    pub extensions: &'static [&'static str],
    /// The `image` crate's decoder, when this build decodes the format.
    pub decoder: Option<ImageFormat>,
}

#[rustfmt::skip]
pub const FORMATS: &[Format] = &[
    Format { name: "JPEG",       extensions: &["jpg", "jpeg", "jpe", "jfif"], decoder: Some(ImageFormat::Jpeg) },
    Format { name: "PNG",        extensions: &["png"],                        decoder: Some(ImageFormat::Png) },
    Format { name: "WebP",       extensions: &["webp"],                       decoder: Some(ImageFormat::WebP) },
    Format { name: "GIF",        extensions: &["gif"],                        decoder: Some(ImageFormat::Gif) },
    Format { name: "BMP",        extensions: &["bmp", "dib"],                 decoder: Some(ImageFormat::Bmp) },
    Format { name: "TIFF",       extensions: &["tif", "tiff"],                decoder: Some(ImageFormat::Tiff) },
    Format { name: "AVIF",       extensions: &["avif"],                       decoder: None },
    Format { name: "HEIF/HEIC",  extensions: &["heic", "heif", "hif"],        decoder: None },
    Format { name: "JPEG XL",    extensions: &["jxl"],                        decoder: None },
    Format { name: "JPEG 2000",  extensions: &["jp2", "j2k", "jpf", "jpx"],   decoder: None },
    Format { name: "camera raw", extensions: &["dng", "cr2", "cr3", "nef", "arw", "orf", "rw2", "raf"], decoder: None },
    Format { name: "Photoshop",  extensions: &["psd"],                        decoder: None },
    Format { name: "SVG",        extensions: &["svg", "svgz"],                decoder: None },
    Format { name: "ICO",        extensions: &["ico"],                        decoder: None },
    Format { name: "TGA",        extensions: &["tga"],                        decoder: None },
    Format { name: "QOI",        extensions: &["qoi"],                        decoder: None },
    Format { name: "PNM",        extensions: &["pnm", "ppm", "pgm", "pbm", "pam"], decoder: None },
    Format { name: "OpenEXR",    extensions: &["exr"],                        decoder: None },
    Format { name: "Radiance HDR", extensions: &["hdr"],                      decoder: None },
];

fn by_name(name: &str) -> &'static Format {
    FORMATS.iter().find(|f| f.name == name).expect("a format of the table")
}

/// The format a file name's extension names, if any (case-insensitive).
pub fn by_extension(file_name: &str) -> Option<&'static Format> {
    let (_, ext) = file_name.rsplit_once('.')?;
    FORMATS.iter().find(|f| f.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Whether a file name says "image" (decoded here or not).
pub fn is_image_name(file_name: &str) -> bool {
    by_extension(file_name).is_some()
}

/// The formats this build decodes, for messages: "JPEG, PNG, ...".
pub fn decoded_names() -> String {
    FORMATS.iter().filter(|f| f.decoder.is_some()).map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// The format the content is, from its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<&'static Format> {
    let starts = |sig: &[u8]| bytes.starts_with(sig);
    let name = if starts(&[0xFF, 0xD8, 0xFF]) {
        "JPEG"
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        "PNG"
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        "GIF"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "WebP"
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        "TIFF"
    } else if starts(b"BM") {
        "BMP"
    } else if let Some(brand) = iso_bmff_image(bytes) {
        brand
    } else if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL \r\n\x87\n") {
        "JPEG XL"
    } else if starts(b"\0\0\0\x0cjP  \r\n\x87\n") || starts(&[0xFF, 0x4F, 0xFF, 0x51]) {
        "JPEG 2000"
    } else if starts(b"8BPS") {
        "Photoshop"
    } else if starts(b"qoif") {
        "QOI"
    } else if starts(&[0x76, 0x2F, 0x31, 0x01]) {
        "OpenEXR"
    } else if starts(b"#?RADIANCE") || starts(b"#?RGBE") {
        "Radiance HDR"
    } else if looks_like_svg(bytes) {
        "SVG"
    } else {
        return None;
    };
    Some(by_name(name))
}

/// AVIF or HEIF from an ISO base media file's `ftyp` box: its major brand
/// and compatible brands (`avif`/`avis` for AVIF; `heic`, `mif1`, ... for
/// HEIF).
fn iso_bmff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let size = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let end = size.clamp(16, bytes.len().min(256));
    let mut brands = vec![&bytes[8..12]];
    brands.extend(bytes[16..end].chunks_exact(4));
    let has = |b: &[u8]| brands.contains(&b);
    if has(b"avif") || has(b"avis") {
        Some("AVIF")
    } else if [b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"heif"].iter().any(|b| has(*b))
    {
        Some("HEIF/HEIC")
    } else {
        None
    }
}

fn looks_like_svg(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    (t.starts_with("<svg") || t.starts_with("<?xml")) && t.contains("<svg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_name_formats_case_insensitively() {
        assert_eq!(by_extension("a/b.JPG").unwrap().name, "JPEG");
        assert_eq!(by_extension("IMG_0001.HEIC").unwrap().name, "HEIF/HEIC");
        assert_eq!(by_extension("x.avif").unwrap().decoder, None);
        assert!(by_extension("notes.txt").is_none());
        assert!(by_extension("jpg").is_none());
        assert!(!is_image_name(".DS_Store"));
    }

    #[test]
    fn content_is_recognised_by_its_signature() {
        let ftyp = |major: &[u8], compat: &[&[u8]]| {
            let mut b = Vec::new();
            b.extend(((16 + 4 * compat.len()) as u32).to_be_bytes());
            b.extend(b"ftyp");
            b.extend(major);
            b.extend([0, 0, 0, 0]);
            for c in compat {
                b.extend(*c);
            }
            b.extend([0u8; 16]);
            b
        };
        assert_eq!(sniff(&ftyp(b"avif", &[b"mif1", b"miaf"])).unwrap().name, "AVIF");
        assert_eq!(sniff(&ftyp(b"mif1", &[b"avif"])).unwrap().name, "AVIF");
        assert_eq!(sniff(&ftyp(b"heic", &[b"mif1"])).unwrap().name, "HEIF/HEIC");
        assert!(sniff(&ftyp(b"isom", &[b"mp41"])).is_none(), "an MP4 video is no image");
        assert_eq!(sniff(b"\xFF\x0A\xFA").unwrap().name, "JPEG XL");
        assert_eq!(sniff(b"<?xml version=\"1.0\"?>\n<svg xmlns=").unwrap().name, "SVG");
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap().decoder, Some(ImageFormat::Jpeg));
        assert!(sniff(b"a shopping list").is_none());
        assert!(sniff(b"").is_none());
    }
}
