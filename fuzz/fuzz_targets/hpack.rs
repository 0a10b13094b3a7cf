//! One HPACK header block through the shim's decoder, twice (the second time with the dynamic
//! table the first one filled).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|block: &[u8]| {
    broker_shim::fuzzing::header_block(block);
});
