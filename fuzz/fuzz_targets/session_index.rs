//! `sessions.json` as a restarted brokerd reads it: every record checked, each session's
//! status and next refresh planned from what it says (times near the end of i64 included).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    brokerd::broker::fuzzing::session_index(bytes);
});
