//! A token endpoint's answer, success or error, read as brokerd reads it: a hostile or broken
//! identity provider must cost one failed refresh, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    brokerd::identity::fuzzing::token_answer(body);
    brokerd::identity::fuzzing::error_answer(body);
});
