//! What the media repository decides without I/O: ids, content types,
//! file names, how content is served, and which thumbnail sizes exist.

/// Thumbnail sizes made, as Synapse's defaults: a request gets the
/// smallest of its method at least as large as asked, else the largest.
pub const THUMBNAIL_SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Exactly the size, the image cropped to its aspect ratio.
    Crop,
    /// Within the size, aspect ratio kept.
    Scale,
}

impl Method {
    pub fn parse(s: Option<&str>) -> Option<Method> {
        match s {
            None | Some("scale") => Some(Method::Scale),
            Some("crop") => Some(Method::Crop),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// The size made for a request of `width`×`height` by `method`.
pub fn thumbnail_size(width: u32, height: u32, method: Method) -> (u32, u32, Method) {
    let same: Vec<_> = THUMBNAIL_SIZES.iter().filter(|(_, _, m)| *m == method).copied().collect();
    same.iter().find(|(w, h, _)| *w >= width && *h >= height).copied().unwrap_or(*same.last().expect("sizes"))
}

/// The key of a thumbnail among its media's: `WxH-method`.
pub fn thumbnail_spec(size: (u32, u32, Method)) -> String {
    format!("{}x{}-{}", size.0, size.1, size.2.as_str())
}

/// Media ids this server makes and takes: `[A-Za-z0-9_-]`, 1 to 255.
pub fn valid_media_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A content type as a client may declare it: `type/subtype` of HTTP
/// token characters, parameters allowed, at most 255 bytes, no controls.
pub fn valid_content_type(ct: &str) -> bool {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else { return false };
    ct.len() <= 255 && !ct.bytes().any(|b| b.is_ascii_control()) && token(kind) && token(sub)
}

/// A file name as kept and served: at most 255 bytes, no control
/// characters, no path separators.
pub fn valid_filename(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
}

/// Types a browser may show inline without running anything (the spec's
/// "serving inline content"); everything else is an attachment.
const INLINE: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// `Content-Disposition` for serving `content_type` under `filename`.
pub fn disposition(content_type: &str, filename: Option<&str>) -> String {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let kind = if INLINE.contains(&essence.as_str()) { "inline" } else { "attachment" };
    match filename.filter(|f| valid_filename(f)) {
        None => kind.to_owned(),
        Some(f) if f.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ') => {
            format!("{kind}; filename=\"{f}\"")
        }
        // RFC 6266: anything else as UTF-8, percent-encoded.
        Some(f) => {
            let enc = percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC);
            format!("{kind}; filename*=utf-8''{enc}")
        }
    }
}

/// The file name in a `Content-Disposition` header (`filename="..."` or
/// `filename*=utf-8''...`), if it is one this server keeps.
pub fn filename_of_disposition(header: &str) -> Option<String> {
    let mut plain = None;
    for param in header.split(';').map(str::trim) {
        let Some((k, v)) = param.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let (charset, rest) = v.split_once("''")?;
                if charset.eq_ignore_ascii_case("utf-8") {
                    let name = percent_encoding::percent_decode_str(rest).decode_utf8().ok()?.into_owned();
                    return Some(name).filter(|n| valid_filename(n));
                }
            }
            "filename" => plain = Some(v.trim().trim_matches('"').to_owned()),
            _ => {}
        }
    }
    plain.filter(|n| valid_filename(n))
}

/// Text types served with a charset so browsers do not sniff one.
pub fn served_content_type(content_type: &str) -> String {
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("text/") && !lower.contains("charset") {
        format!("{content_type}; charset=utf-8")
    } else {
        content_type.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_come_in_fixed_sizes() {
        assert_eq!(thumbnail_size(10, 10, Method::Crop), (32, 32, Method::Crop));
        assert_eq!(thumbnail_size(64, 64, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(thumbnail_size(500, 500, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(thumbnail_size(100, 100, Method::Scale), (320, 240, Method::Scale));
        assert_eq!(thumbnail_size(641, 10, Method::Scale), (800, 600, Method::Scale));
        assert_eq!(thumbnail_size(4000, 4000, Method::Scale), (800, 600, Method::Scale));
        assert_eq!(thumbnail_spec((96, 96, Method::Crop)), "96x96-crop");
    }

    #[test]
    fn ids_types_and_names_are_checked() {
        assert!(valid_media_id("AbC_09-x"));
        assert!(!valid_media_id("../etc"));
        assert!(!valid_media_id("a/b"));
        assert!(!valid_media_id(""));
        assert!(valid_content_type("image/png"));
        assert!(valid_content_type("text/plain; charset=utf-8"));
        assert!(!valid_content_type("image"));
        assert!(!valid_content_type("image/png\r\nX-Evil: 1"));
        assert!(!valid_content_type("ima ge/png"));
        assert!(!valid_filename("a/b.png"));
        assert!(!valid_filename("a\nb"));
        assert!(valid_filename("cat picture.png"));
    }

    #[test]
    fn only_safe_types_are_inline() {
        assert_eq!(disposition("image/png", Some("cat.png")), "inline; filename=\"cat.png\"");
        assert_eq!(disposition("text/html", Some("x.html")), "attachment; filename=\"x.html\"");
        assert_eq!(disposition("image/svg+xml", None), "attachment");
        assert_eq!(disposition("IMAGE/PNG; q=1", None), "inline");
        assert_eq!(
            disposition("text/plain", Some("ça \"va\".txt")),
            "inline; filename*=utf-8''%C3%A7a%20%22va%22%2Etxt"
        );
        assert_eq!(served_content_type("text/plain"), "text/plain; charset=utf-8");
        assert_eq!(filename_of_disposition("inline; filename=\"cat.png\"").as_deref(), Some("cat.png"));
        assert_eq!(filename_of_disposition("attachment; filename*=utf-8''%C3%A7a.txt").as_deref(), Some("ça.txt"));
        assert_eq!(filename_of_disposition("inline; filename=\"../x\"").as_deref(), None);
        assert_eq!(filename_of_disposition("inline"), None);
    }
}
