//! ECMAScript `Number::toString` for finite doubles (ECMA-262 section
//! 6.1.6.1.20), which RFC 8785 uses for every number.

/// Appends the ECMAScript rendering of `x` (must be finite).
pub fn write_ecmascript_number(out: &mut Vec<u8>, x: f64) {
    if x == 0.0 {
        out.push(b'0'); // both +0 and -0
        return;
    }
    if x < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, which is the
    // `s`/`k` of the specification; only the layout differs.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    let d = digits.as_bytes();
    if k <= n && n <= 21 {
        out.extend_from_slice(d);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&d[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&d[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(d);
    } else {
        out.push(d[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&d[1..]);
        }
        out.push(b'e');
        let e = n - 1;
        out.push(if e < 0 { b'-' } else { b'+' });
        out.extend_from_slice(e.unsigned_abs().to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(x: f64) -> String {
        let mut v = Vec::new();
        write_ecmascript_number(&mut v, x);
        String::from_utf8(v).unwrap()
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the literal is the RFC 8785 test input as written
    fn ecmascript_forms() {
        // Expected strings are what ECMAScript engines print for these values.
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123e18, "123000000000000000000"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (333333333.33333329, "333333333.3333333"),
            (1e30, "1e+30"),
            (4.5, "4.5"),
            (0.002, "0.002"),
            (1e-27, "1e-27"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (9007199254740992.0, "9007199254740992"),
            (295147905179352830000.0, "295147905179352830000"),
            (123456.789, "123456.789"),
        ];
        for (x, want) in cases {
            assert_eq!(es(x), want, "{x:e}");
        }
    }
}
