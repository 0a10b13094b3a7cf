//! `KUBERNETES_EXEC_INFO`, as kubectl hands it to broker-shim, and the ExecCredential written
//! back for it.
#![no_main]

use broker_proto::exec_credential::{exec_credential, exec_info};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|variable: &str| {
    for terminal in [false, true] {
        if let Ok(info) = exec_info(Some(variable), terminal) {
            let _ = exec_credential(info.api_version, variable, i64::from(terminal));
        }
    }
});
