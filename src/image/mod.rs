//! Image bytes → a normalised model input, or the reason it cannot be one.
//!
//! Decoding goes through the `image` crate (the formats [`format`] marks as
//! decoded, recognised by content) with pixel and allocation [`Limits`], so
//! a decompression bomb is refused before its pixels are allocated. Each
//! decode first takes what it will allocate from [`DECODE_MEMORY`], so a
//! few huge photos are decoded one after the other, not all at once; and
//! runs under [`crate::guard::catch`], so a decoder that panics on a
//! hostile file rejects that file (`decoder-crash`) instead of ending the
//! run. EXIF orientation is applied (phone
//! photos); every colour type (grey, RGBA, CMYK, 16-bit, palette) ends up
//! RGB8, with transparency composited on white like the Fruits-360
//! backgrounds.
//!
//! Resize: the whole image, no crop, to the model's square input with a
//! Catmull-Rom (bicubic) filter, the interpolation timm's configs name for
//! both models. An image already at that size is not resampled. Then
//! `/255` and ImageNet mean/std, as the timm weights expect.

pub mod budget;
pub mod format;
mod reject;

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use budget::Budget;
pub use reject::{RejectKind, Rejection};

/// Largest side accepted, in pixels: 4× a 48 MP phone photo's long side.
pub const MAX_SIDE: u32 = 32_768;
/// Largest decode buffer accepted.
pub const MAX_ALLOC: u64 = 1 << 30;

/// Memory all decodes in flight may use together: one image at
/// [`MAX_ALLOC`] fits, and so do a dozen 48 MP phone photos at once.
pub const DECODE_MEMORY: u64 = 2 << 30;

/// The process's decode budget (every decode thread of every run shares it).
static BUDGET: Budget = Budget::new(DECODE_MEMORY);

/// How preprocessing is described in the Parquet metadata: `mean` and
/// `std` are the model's input normalisation (`model::plan::InputNorm`).
pub fn preprocessing_description(res: usize, mean: [f32; 3], std: [f32; 3]) -> String {
    let named = if mean == [0.485, 0.456, 0.406] { "imagenet " } else { "" };
    format!(
        "exif-orientation; rgb8 (alpha over white); resize whole image to {res}x{res} catmull-rom (no crop); \
         /255; {named}mean {mean:?} std {std:?}; chw"
    )
}

/// One image ready for the network.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// res × res × 3 RGB8, row-major (a quarter of the f32 size; the model
    /// normalises as it reads, see [`normaliser`]).
    pub rgb: Vec<u8>,
    /// Size after EXIF orientation, before resizing.
    pub width: u32,
    pub height: u32,
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_ALLOC);
    l
}

fn classify(e: ImageError) -> Rejection {
    match e {
        ImageError::Limits(l) => Rejection::new(RejectKind::TooLarge, l.to_string()),
        ImageError::Unsupported(u) => Rejection::new(RejectKind::Unsupported, u.to_string()),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Rejection::new(RejectKind::Truncated, io.to_string())
        }
        other => {
            let msg = other.to_string();
            let lower = msg.to_lowercase();
            if lower.contains("eof") || lower.contains("end of file") || lower.contains("truncat") {
                Rejection::new(RejectKind::Truncated, msg)
            } else {
                Rejection::new(RejectKind::Corrupt, msg)
            }
        }
    }
}

/// A JPEG is complete when an end-of-image marker (FF D9) follows the last
/// start-of-scan (FF DA). The `image` crate's decoder pads a cut-off JPEG
/// with grey instead of failing, so this check is what rejects it. Byte
/// stuffing (FF 00) keeps FF D9 out of entropy-coded data; an EXIF
/// thumbnail's EOI comes before the main image's SOS, so it does not count.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// Decodes `bytes` and turns them into a `res`×`res` model input. Never
/// panics: a panic inside the decoder or the resize is a rejection.
pub fn prepare(bytes: &[u8], res: u32) -> Result<Prepared, Rejection> {
    prepare_within(bytes, res, u64::MAX)
}

/// [`prepare`], refusing an image of more than `max_pixels` pixels from its
/// header, before a pixel is decoded (a small file can declare a huge
/// image: each such decode is seconds of a core).
pub fn prepare_within(bytes: &[u8], res: u32, max_pixels: u64) -> Result<Prepared, Rejection> {
    crate::guard::catch(|| {
        let rgb = decode_within(bytes, max_pixels)?;
        let (width, height) = rgb.dimensions();
        let rgb = if (width, height) == (res, res) { rgb.into_raw() } else { resize(&rgb, res)? };
        Ok(Prepared { rgb, width, height })
    })
    .unwrap_or_else(|panic| Err(Rejection::new(RejectKind::DecoderCrash, format!("the decoder panicked: {panic}"))))
}

/// Catmull-Rom resize of the whole image to `res`×`res` with
/// `fast_image_resize` (SIMD, fixed-point like Pillow's BICUBIC): a quarter
/// of the time `image::imageops::resize` takes for the same filter.
fn resize(rgb: &RgbImage, res: u32) -> Result<Vec<u8>, Rejection> {
    use fast_image_resize::{
        images::{Image, ImageRef},
        FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    };
    thread_local! {
        // The resizer keeps its scratch buffers between images.
        static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
    }
    let (w, h) = rgb.dimensions();
    let fail = |e: &dyn std::fmt::Display| Rejection::new(RejectKind::Corrupt, format!("resize {w}x{h}: {e}"));
    let src = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3).map_err(|e| fail(&e))?;
    let mut dst = Image::new(res, res, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &opts)).map_err(|e| fail(&e))?;
    Ok(dst.into_vec())
}

/// Decodes to upright RGB8 (orientation applied, alpha over white).
pub fn decode_rgb8(bytes: &[u8]) -> Result<RgbImage, Rejection> {
    decode_within(bytes, u64::MAX)
}

/// [`decode_rgb8`], refusing more than `max_pixels` pixels from the header.
fn decode_within(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::new(RejectKind::Empty, "file has zero bytes"));
    }
    let format = match format::sniff(bytes) {
        Some(f) => f,
        None => return Err(Rejection::new(RejectKind::Unsupported, "content is not a known image format")),
    };
    let Some(decoder_format) = format.decoder else {
        return Err(Rejection::new(
            RejectKind::Unsupported,
            format!("{} image: fruits decodes {} (convert it first)", format.name, format::decoded_names()),
        ));
    };
    if decoder_format == ImageFormat::Jpeg && !jpeg_complete(bytes) {
        return Err(Rejection::new(RejectKind::Truncated, "jpeg has no end-of-image marker after its last scan"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), decoder_format);
    reader.limits(limits());
    let mut decoder = reader.into_decoder().map_err(classify)?;
    // Decoder output, its RGB8 conversion and an oriented copy, at most.
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > max_pixels {
        let detail = format!("{w}x{h} = {} pixels, more than the limit of {max_pixels}", w as u64 * h as u64);
        return Err(Rejection::new(RejectKind::TooLarge, detail));
    }
    let _memory = BUDGET.acquire(decoder.total_bytes().saturating_add(2 * 3 * w as u64 * h as u64));
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8_on_white(img))
}

fn to_rgb8_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = src[3] as u32;
        for c in 0..3 {
            dst[c] = ((src[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// Images of `plane` RGB8 pixels each, back to back → NCHW f32, normalised
/// as `x * scale - shift` per channel (the model's `InputNorm::scale_shift`).
pub fn normalise_batch(rgb: &[u8], plane: usize, (scale, shift): ([f32; 3], [f32; 3])) -> Vec<f32> {
    let mut out = vec![0f32; rgb.len()];
    for (img, dst) in rgb.chunks_exact(3 * plane).zip(out.chunks_exact_mut(3 * plane)) {
        for (i, p) in img.chunks_exact(3).enumerate() {
            for c in 0..3 {
                dst[c * plane + i] = p[c] as f32 * scale[c] - shift[c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_completeness_needs_eoi_after_last_scan() {
        assert!(jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9]));
        assert!(!jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 3]));
        // A thumbnail's EOI before the main scan does not count.
        assert!(!jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2]));
    }

    #[test]
    fn alpha_composites_on_white() {
        let mut img = image::RgbaImage::new(1, 2);
        img.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        img.put_pixel(0, 1, image::Rgba([10, 20, 30, 255]));
        let rgb = to_rgb8_on_white(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(0, 1).0, [10, 20, 30]);
    }

    #[test]
    fn normalise_is_channel_major() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(1, 0, image::Rgb([255, 0, 0]));
        let imagenet = ([1.0 / (255.0 * 0.229), 1.0 / (255.0 * 0.224), 0.0], [0.485 / 0.229, 0.456 / 0.224, 0.0]);
        let v = normalise_batch(img.as_raw(), 2, imagenet);
        assert_eq!(v.len(), 6);
        assert!((v[1] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((v[3] - (-0.456 / 0.224)).abs() < 1e-5);
    }
}
