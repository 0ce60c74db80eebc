//! Catalog ids: parsing never panics, and what parses prints back to an id that parses to itself
//! (the contract promises lossless round trips).
#![no_main]

use artifacts_contract::CatalogId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<CatalogId>() {
        let printed = id.to_string();
        let again: CatalogId = printed
            .parse()
            .unwrap_or_else(|e| panic!("{printed:?} (from {text:?}) does not parse back: {e}"));
        assert_eq!(again, id, "{text:?} printed as {printed:?}");
    }
});
