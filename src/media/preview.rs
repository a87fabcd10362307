//! What a URL preview shows of a page: its Open Graph properties, else its
//! title and description, read with an HTML parser from at most the bytes
//! fetched. Image URLs are made absolute against the page's address.

use scraper::{Html, Selector};
use serde_json::{Map, Value};

/// Longest text kept of one property.
const MAX_TEXT: usize = 2_000;

/// The `og:*` properties of an HTML page (with `og:title` and
/// `og:description` from `<title>` and `<meta name="description">` when
/// the page has none).
pub fn open_graph(html: &str, page_url: &str) -> Map<String, Value> {
    let doc = Html::parse_document(html);
    let mut og = Map::new();
    let meta = Selector::parse("meta").expect("a valid selector");
    for el in doc.select(&meta) {
        let attrs = el.value();
        let key = attrs.attr("property").or_else(|| attrs.attr("name")).unwrap_or("");
        let Some(content) = attrs.attr("content") else { continue };
        let key = key.trim().to_ascii_lowercase();
        if key.starts_with("og:") && key.len() <= 64 && !og.contains_key(&key) {
            og.insert(key, Value::String(clip(content)));
        } else if key == "description" && !og.contains_key("og:description") {
            og.insert("og:description".into(), Value::String(clip(content)));
        }
    }
    if !og.contains_key("og:title") {
        let title = Selector::parse("title").expect("a valid selector");
        if let Some(t) = doc.select(&title).next() {
            let text: String = t.text().collect();
            if !text.trim().is_empty() {
                og.insert("og:title".into(), Value::String(clip(text.trim())));
            }
        }
    }
    if let Some(Value::String(img)) = og.get("og:image") {
        match absolute(page_url, img) {
            Some(abs) => {
                og.insert("og:image".into(), Value::String(abs));
            }
            None => {
                og.remove("og:image");
            }
        }
    }
    og
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

/// `link` made absolute against `base` (`http`/`https` only).
pub fn absolute(base: &str, link: &str) -> Option<String> {
    let link = link.trim();
    if link.starts_with("http://") || link.starts_with("https://") {
        return Some(link.to_owned());
    }
    let (scheme, rest) = base.split_once("://")?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if let Some(path) = link.strip_prefix("//") {
        return Some(format!("{scheme}://{path}"));
    }
    if link.starts_with('/') {
        return Some(format!("{origin}{link}"));
    }
    let path = &rest[host_end..];
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{origin}{dir}{link}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_graph_comes_first_then_title_and_description() {
        let html = r#"<html><head><title>Plain title</title>
            <meta property="og:title" content="OG title">
            <meta name="description" content="A page">
            <meta property="og:image" content="/img/cat.png">
            <script>document.write('<meta property="og:title" content="no">')</script>
            </head><body>hi</body></html>"#;
        let og = open_graph(html, "https://example.org/a/b.html");
        assert_eq!(og["og:title"], "OG title");
        assert_eq!(og["og:description"], "A page");
        assert_eq!(og["og:image"], "https://example.org/img/cat.png");
        let og = open_graph("<title> Only a title </title>", "http://x.test/");
        assert_eq!(og["og:title"], "Only a title");
    }

    #[test]
    fn links_are_made_absolute() {
        assert_eq!(absolute("https://a.test/x/y", "z.png").as_deref(), Some("https://a.test/x/z.png"));
        assert_eq!(absolute("https://a.test/x/y", "//cdn.test/z").as_deref(), Some("https://cdn.test/z"));
        assert_eq!(absolute("https://a.test", "/z").as_deref(), Some("https://a.test/z"));
        assert_eq!(absolute("nonsense", "z"), None);
    }
}
