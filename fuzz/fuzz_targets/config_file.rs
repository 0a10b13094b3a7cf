//! The configuration file, parsed and checked as brokerd does on every (re)load, then each
//! profile turned into the session it names.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = brokerd::config::Config::parse(text) {
        for profile in config.profiles.values() {
            let _ = profile.spec(None);
        }
    }
});
