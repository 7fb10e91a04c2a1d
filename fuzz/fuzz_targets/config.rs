//! A config file's bytes: never a panic, and a file that is accepted renders to TOML that
//! parses back to the same policy (what `edge config show` relies on).
#![no_main]
use std::path::Path;

use edge::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = Path::new("/etc/edge");
    if let Ok(policy) = Policy::from_bytes(data, "fuzz.toml", base) {
        let again = Policy::parse(&policy.to_toml(), "rendered.toml", base)
            .expect("a rendered policy parses");
        assert_eq!(again, policy, "rendering changed the policy");
    }
});
