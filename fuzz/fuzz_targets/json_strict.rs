//! The strict JSON parser under every number policy: it must never panic,
//! and whatever it accepts must canonicalise to text that parses back to the
//! same canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmx::core::json::{parse, to_canonical, Canonical, NumberPolicy};

fuzz_target!(|data: &[u8]| {
    for (policy, form) in [
        (NumberPolicy::MatrixLenient, Canonical::Matrix),
        (NumberPolicy::MatrixStrict, Canonical::Matrix),
        (NumberPolicy::Ieee754, Canonical::Rfc8785),
        (NumberPolicy::LmStrict, Canonical::Rfc8785),
    ] {
        let Ok(value) = parse(data, policy) else { continue };
        let first = to_canonical(&value, form).expect("accepted values canonicalise");
        let again = parse(&first, policy).expect("canonical output parses");
        assert_eq!(to_canonical(&again, form).unwrap(), first, "canonical form is a fixed point");
    }
});
