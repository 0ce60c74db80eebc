//! The GGUF header reader: any bytes (a Range read of a hostile file) give a header or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match catalog::ingest::gguf::parse_header(data) {
        Ok(header) => {
            let _ = header.llm_config();
        }
        Err(e) => {
            let _ = catalog::ingest::gguf::next_read_size(&e);
            let _ = e.to_string();
        }
    }
});
