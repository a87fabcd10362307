//! Thumbnails, made with the `image` crate inside fixed bounds: an image
//! whose dimensions or decoded size are over them is refused before it is
//! decoded, so a small hostile file cannot take the memory of a huge one.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::content::Method;

/// Largest width or height decoded.
const MAX_SIDE: u32 = 12_000;
/// Largest allocation decoding may make.
const MAX_ALLOC: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbnailError {
    /// Not an image this server reads.
    NotAnImage(String),
    /// An image over the bounds.
    TooLarge(String),
}

pub struct Thumbnail {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// A thumbnail of `source` at `size`: PNG where the source may have
/// transparency, JPEG otherwise. Scaling never enlarges.
pub fn make(source: &[u8], size: (u32, u32, Method)) -> Result<Thumbnail, ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::NotAnImage(e.to_string()))?;
    let format = reader.format().ok_or_else(|| ThumbnailError::NotAnImage("unknown image format".into()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => ThumbnailError::TooLarge(l.to_string()),
        other => ThumbnailError::NotAnImage(other.to_string()),
    })?;
    let (w, h, method) = size;
    let out = match method {
        Method::Crop => image.resize_to_fill(w, h, image::imageops::FilterType::Triangle),
        Method::Scale if image.width() <= w && image.height() <= h => image,
        Method::Scale => image.resize(w, h, image::imageops::FilterType::Triangle),
    };
    encode(out, format)
}

fn encode(image: DynamicImage, source: ImageFormat) -> Result<Thumbnail, ThumbnailError> {
    let (width, height) = (image.width(), image.height());
    let png = image.color().has_alpha() || matches!(source, ImageFormat::Png | ImageFormat::Gif);
    let mut bytes = Vec::new();
    let failed = |e: image::ImageError| ThumbnailError::NotAnImage(e.to_string());
    if png {
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).map_err(failed)?;
        Ok(Thumbnail { content_type: "image/png", bytes, width, height })
    } else {
        let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80);
        rgb.write_with_encoder(encoder).map_err(failed)?;
        Ok(Thumbnail { content_type: "image/jpeg", bytes, width, height })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, alpha: bool) -> Vec<u8> {
        let img = if alpha {
            DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(w, h, image::Rgba([10, 200, 30, 128])))
        } else {
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7])))
        };
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, _| image::Rgb([x as u8, 3, 9])));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg).unwrap();
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn crop_gives_the_exact_size_and_scale_keeps_the_aspect() {
        let t = make(&jpeg(1000, 500), (96, 96, Method::Crop)).unwrap();
        assert_eq!((t.width, t.height, t.content_type), (96, 96, "image/jpeg"));
        let back = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((back.width(), back.height()), (96, 96));
        let t = make(&jpeg(1000, 500), (320, 240, Method::Scale)).unwrap();
        assert_eq!((t.width, t.height), (320, 160));
    }

    #[test]
    fn scaling_never_enlarges_and_transparency_stays_png() {
        let t = make(&png(50, 40, true), (320, 240, Method::Scale)).unwrap();
        assert_eq!((t.width, t.height, t.content_type), (50, 40, "image/png"));
    }

    #[test]
    fn what_is_not_an_image_or_too_large_is_refused() {
        assert!(matches!(make(b"hello, not an image", (32, 32, Method::Crop)), Err(ThumbnailError::NotAnImage(_))));
        // A PNG header claiming 20000×20000 is refused before decoding.
        let mut big = png(1, 1, false);
        big[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        big[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&big[12..29]);
        big[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(make(&big, (32, 32, Method::Crop)), Err(ThumbnailError::TooLarge(_))));
    }
}
