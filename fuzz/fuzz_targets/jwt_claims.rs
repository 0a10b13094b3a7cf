//! An ID token's claims, decoded for the account name brokerd shows.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    brokerd::identity::fuzzing::id_token(token);
});
