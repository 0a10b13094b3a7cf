//! `brokerctl kubeconfig convert` on a kubeconfig it did not write: converted, and the masked
//! diff shown to the user.
#![no_main]

use brokerd::kubeconfig::{ConvertOptions, convert, masked_diff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let env = |_: &str| None;
    let options = ConvertOptions {
        context: None,
        command: "broker-shim",
        env: &env,
    };
    if let Ok(conversion) = convert(text, &options) {
        let secrets: Vec<&str> = conversion
            .converted
            .iter()
            .flat_map(|user| user.secret_values())
            .collect();
        let _ = masked_diff("config", text, &conversion.text, &secrets);
    }
});
