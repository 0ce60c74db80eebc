//! The safetensors header reader: any bytes give a header or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = catalog::ingest::safetensors::header_len(data);
    if let Err(e) = catalog::ingest::safetensors::parse_header(data) {
        let _ = e.to_string();
    }
});
