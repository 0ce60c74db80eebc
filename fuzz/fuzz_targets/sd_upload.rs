//! worker-sd's uploaded images and masks: raw bytes through the header check and decoder (first byte
//! even), or a whole request body with base64 images (first byte odd); never a panic, never an
//! allocation past the decoder's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker_sd::server::ImageRequestBody;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let field = if selector % 4 == 0 { "image" } else { "mask" };
        if let Ok(image) = worker_sd::upload::decode_image(rest, field) {
            assert!(image.width() <= worker_sd::upload::MAX_UPLOAD_SIDE);
            assert!(image.height() <= worker_sd::upload::MAX_UPLOAD_SIDE);
        }
    } else if let Ok(body) = serde_json::from_slice::<ImageRequestBody>(rest) {
        let _ = body.into_request();
    }
});
