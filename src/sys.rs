//! The process's clock and randomness: the only places lmx reads either, so
//! the pure layers get time and random values as arguments.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Random URL-safe text (tokens, device ids, room ids).
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::getrandom(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// A random fraction in `[0, 1)` (jitter for retries).
pub fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes).expect("the OS has randomness");
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}
