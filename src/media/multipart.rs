//! `multipart/mixed` as federation media answers use it: a JSON metadata
//! part, then the file (or a `Location` header naming where it is).

/// The boundary named by a `Content-Type: multipart/mixed; boundary=...`.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut parts = content_type.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"')).filter(|b| valid_boundary(b))
    })
}

/// RFC 2046: 1 to 70 characters of a small set.
fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len()) && b.bytes().all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl Part<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The parts of a multipart body, or `None` when it is not one.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut at = find(body, d, 0)?;
    let mut parts = Vec::new();
    loop {
        let after = at + d.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        // The rest of the delimiter line (transport padding), then CRLF.
        let line_end = find(body, b"\r\n", after)?;
        let start = line_end + 2;
        let next = find(body, &[b"\r\n", d].concat(), start.saturating_sub(2))?;
        let next = next.max(start);
        let whole = body.get(start..next)?;
        let (head, content) = match find(whole, b"\r\n\r\n", 0) {
            Some(i) => (&whole[..i], &whole[i + 4..]),
            None if whole.starts_with(b"\r\n") => (&whole[..0], &whole[2..]),
            None => return None,
        };
        let headers = std::str::from_utf8(head)
            .ok()?
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
            .collect::<Option<Vec<_>>>()?;
        parts.push(Part { headers, body: content });
        at = next + 2;
        if parts.len() > 16 {
            return None;
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// What comes before and after a file's bytes in a federation answer.
pub fn frame(boundary: &str, content_type: &str, disposition: &str) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    );
    (head.into_bytes(), format!("\r\n--{boundary}--\r\n").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_file_parses_back() {
        let file = b"\x89PNG\r\n--not-the-boundary\r\n\x00\xff";
        let (head, tail) = frame("b0undary", "image/png", "inline; filename=\"a.png\"");
        let body = [head.as_slice(), file, tail.as_slice()].concat();
        let ct = "multipart/mixed; boundary=b0undary";
        let parts = parse(&body, boundary(ct).unwrap()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("content-type"), Some("application/json"));
        assert_eq!(parts[0].body, b"{}");
        assert_eq!(parts[1].header("content-type"), Some("image/png"));
        assert_eq!(parts[1].body, file);
    }

    #[test]
    fn synapse_style_bodies_and_redirects_parse() {
        let body = b"\r\n--6067d4698f8d40a0a794ea7d7379d53a\r\nContent-Type: application/json\r\n\r\n{}\r\n--6067d4698f8d40a0a794ea7d7379d53a\r\nLocation: https://cdn.example/x\r\n\r\n\r\n--6067d4698f8d40a0a794ea7d7379d53a--\r\n\r\n";
        let parts = parse(body, "6067d4698f8d40a0a794ea7d7379d53a").unwrap();
        assert_eq!(parts[1].header("location"), Some("https://cdn.example/x"));
        assert_eq!(parts[1].body, b"");
    }

    #[test]
    fn what_is_not_multipart_is_refused() {
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/mixed"), None);
        assert_eq!(boundary("multipart/mixed; boundary=\"\""), None);
        assert_eq!(boundary("Multipart/Mixed; charset=x; Boundary=\"ab c\""), Some("ab c"));
        assert_eq!(parse(b"no delimiter here", "b"), None);
        assert_eq!(parse(b"--b\r\nContent-Type x\r\n\r\nbody\r\n--b--", "b"), None);
    }
}
