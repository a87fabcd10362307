//! A strict JSON parser (RFC 8259) into `serde_json::Value`.
//!
//! serde_json's own parser cannot be used for events: it keeps the last of
//! duplicate keys, replaces lone surrogates, and forgets how a number was
//! spelt (`-0`, `1.0`, `1e5` all look alike afterwards). The number policy
//! decides what each room version's rules accept.

use serde_json::{Map, Number, Value};

use super::{JsonError, NumberPolicy, MAX_DEPTH, MAX_SAFE_INTEGER};

pub(super) fn parse(input: &[u8], policy: NumberPolicy) -> Result<Value, JsonError> {
    let mut p = Parser { s: input, i: 0, policy, depth: 0 };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing data after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    policy: NumberPolicy,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> JsonError {
        JsonError::Syntax { offset: self.i, msg: msg.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected '{}'", c as char)))
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, JsonError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal (NaN and Infinity are not JSON)"))
        }
    }

    fn value(&mut self) -> Result<Value, JsonError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Value, JsonError>) -> Result<Value, JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Result<Value, JsonError> {
        self.expect(b'{')?;
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            let at = self.i;
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let v = self.value()?;
            if map.contains_key(&key) {
                // Documented choice for the disputed vector: refuse.
                return Err(JsonError::DuplicateKey { offset: at, key });
            }
            map.insert(key, v);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, JsonError> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self.s.get(self.i..self.i + 4).ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v = 0u16;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + n as u16;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            // Copy runs of plain bytes in one go; UTF-8 is checked per run.
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let run = std::str::from_utf8(&self.s[start..self.i])
                .map_err(|e| JsonError::Syntax { offset: start + e.valid_up_to(), msg: "invalid UTF-8".into() })?;
            out.push_str(run);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.err("truncated escape"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            self.i -= 1;
                            return Err(self.err("invalid escape"));
                        }
                    }
                }
                Some(_) => return Err(self.err("control character in string must be escaped")),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let hi = self.hex4()?;
        let code = match hi {
            0xD800..=0xDBFF => {
                if !self.s[self.i..].starts_with(b"\\u") {
                    return Err(self.err("unpaired UTF-16 surrogate"));
                }
                self.i += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(self.err("unpaired UTF-16 surrogate"));
                }
                0x10000 + (((hi as u32) - 0xD800) << 10) + ((lo as u32) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.err("unpaired UTF-16 surrogate")),
            _ => hi as u32,
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid code point"))
    }

    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.err("leading zeros are not allowed"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        let int_end = self.i;
        let mut is_integer_literal = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("digits expected after '.'"));
            }
            self.digits();
            is_integer_literal = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("digits expected in exponent"));
            }
            self.digits();
            is_integer_literal = false;
        }
        // Safe: the scanned bytes are ASCII.
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        let negative_zero = is_integer_literal && negative && int_end == start + 2;
        self.classify(text, is_integer_literal, negative_zero, start)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn classify(
        &self,
        text: &str,
        integer_literal: bool,
        negative_zero: bool,
        offset: usize,
    ) -> Result<Number, JsonError> {
        let bad = |why: &str| JsonError::Number { offset, text: text.to_owned(), why: why.to_owned() };
        if integer_literal && !negative_zero {
            match text.parse::<i64>() {
                Ok(i) if i.unsigned_abs() <= MAX_SAFE_INTEGER => return Ok(Number::from(i)),
                _ => match self.policy {
                    NumberPolicy::MatrixLenient | NumberPolicy::MatrixStrict => {
                        return Err(bad("integer outside ±(2^53−1)"))
                    }
                    // Beyond 2^53 an integer is a double; LM refuses the ones
                    // a double cannot carry, which would not round-trip (OQ-5).
                    NumberPolicy::LmStrict => {
                        let f: f64 = text.parse().map_err(|_| bad("unparsable number"))?;
                        let mut rendered = Vec::new();
                        super::write_ecmascript_number(&mut rendered, f);
                        if rendered != text.as_bytes() {
                            return Err(bad("integer cannot round-trip through an IEEE-754 double"));
                        }
                    }
                    NumberPolicy::Ieee754 => {}
                },
            }
        }
        match self.policy {
            NumberPolicy::MatrixStrict if negative_zero => Err(bad("-0 is not canonical")),
            NumberPolicy::MatrixStrict => Err(bad("only integers are allowed (no fraction or exponent)")),
            NumberPolicy::MatrixLenient => {
                let f: f64 = text.parse().map_err(|_| bad("unparsable number"))?;
                if f.fract() != 0.0 || !f.is_finite() || f.abs() > MAX_SAFE_INTEGER as f64 {
                    return Err(bad("not an integer within ±(2^53−1)"));
                }
                Ok(Number::from(f as i64))
            }
            NumberPolicy::Ieee754 | NumberPolicy::LmStrict => self.double(text, &bad),
        }
    }

    /// Parses as an IEEE-754 double; integral values in the safe range are
    /// stored as integers so typed fields read them naturally.
    fn double(&self, text: &str, bad: &dyn Fn(&str) -> JsonError) -> Result<Number, JsonError> {
        let f: f64 = text.parse().map_err(|_| bad("unparsable number"))?;
        if !f.is_finite() {
            return Err(bad("number overflows a double"));
        }
        if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 {
            return Ok(Number::from(f as i64));
        }
        Number::from_f64(f).ok_or_else(|| bad("number is not finite"))
    }
}
