//! The YAML config: any text either parses into a config that validates and round-trips, or is
//! an error. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_signer::config::SignerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = SignerConfig::from_yaml(text) {
        let again = SignerConfig::from_yaml(&config.to_yaml()).expect("a valid config round-trips");
        assert_eq!(again, config);
    }
});
