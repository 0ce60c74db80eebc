//! Finished images: tensors to pixels, and PNGs that carry their generation parameters in a `parameters`
//! text chunk as AUTOMATIC1111 writes it (ComfyUI, InvokeAI and CivitAI read the same), so an image can
//! be reproduced from itself.

use std::path::Path;

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::error::{Result, SdError};
use crate::pipeline::PipelineInfo;
use crate::request::ValidRequest;

/// A `(3, h, w)` or `(1, 3, h, w)` tensor in [-1, 1] as 8-bit RGB.
pub fn to_image(tensor: &Tensor) -> Result<RgbImage> {
    let tensor = if tensor.rank() == 4 {
        tensor.squeeze(0)?
    } else {
        tensor.clone()
    };
    let (_, height, width) = tensor.dims3()?;
    let pixels = ((tensor.to_dtype(DType::F32)?.clamp(-1.0, 1.0)? + 1.0)? * 127.5)?
        .round()?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_dtype(DType::U8)?
        .to_vec1::<u8>()?;
    RgbImage::from_raw(width as u32, height as u32, pixels).ok_or_else(|| SdError::Image {
        what: "output",
        message: "pixel count does not match the size".into(),
    })
}

/// An 8-bit RGB image as a `(1, 3, h, w)` tensor in [-1, 1], as the VAE encoder wants it.
pub fn from_image(image: &RgbImage, device: &candle_core::Device) -> Result<Tensor> {
    let (width, height) = image.dimensions();
    let tensor = Tensor::from_vec(
        image.as_raw().clone(),
        (height as usize, width as usize, 3),
        device,
    )?
    .permute((2, 0, 1))?
    .to_dtype(DType::F32)?;
    Ok(((tensor / 127.5)? - 1.0)?.unsqueeze(0)?)
}

/// The A1111 `parameters` text: prompt (with its LoRAs as `<lora:NAME:WEIGHT>` tags), then
/// `Negative prompt:`, then one line of `Key: value` pairs, with `Model hash`, `TI hashes` and `Lora hashes`
/// (the short SHA-256s CivitAI recognizes resources by) when known.
pub fn parameters(request: &ValidRequest, seed: u64, info: &PipelineInfo) -> String {
    let model = &info.model_name;
    let mut text = request.prompt.clone();
    for lora in &request.loras {
        text.push_str(&format!(" <lora:{}:{}>", lora.file.name, lora.weight));
    }
    if !request.negative_prompt.is_empty() {
        text.push_str(&format!("\nNegative prompt: {}", request.negative_prompt));
    }
    text.push_str(&format!(
        "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, ",
        request.steps, request.scheduler, request.cfg_scale, seed, request.width, request.height
    ));
    if let Some(hash) = &info.model_hash {
        text.push_str(&format!("Model hash: {}, ", &hash[..hash.len().min(10)]));
    }
    text.push_str(&format!("Model: {model}"));
    if request.clip_skip > 1 {
        text.push_str(&format!(", Clip skip: {}", request.clip_skip));
    }
    if request.init_image.is_some() {
        text.push_str(&format!(", Denoising strength: {}", request.strength));
    }
    if let Some(rng) = request.rng.a1111_name() {
        text.push_str(&format!(", RNG: {rng}"));
    }
    if !request.embeddings.is_empty() {
        let hashes: Vec<String> = request
            .embeddings
            .iter()
            .map(|e| {
                let name = crate::embeddings::explicit(&e.word).unwrap_or(&e.word);
                format!("{}: {}", name.replace([':', ','], ""), e.file.short_hash)
            })
            .collect();
        text.push_str(&format!(
            ", TI hashes: {}",
            serde_json::Value::from(hashes.join(", "))
        ));
    }
    if !request.loras.is_empty() {
        let hashes: Vec<String> = request
            .loras
            .iter()
            .map(|l| format!("{}: {}", l.file.name.replace([':', ','], ""), l.file.short_hash))
            .collect();
        // A1111 quotes a value holding commas or colons as a JSON string.
        text.push_str(&format!(
            ", Lora hashes: {}",
            serde_json::Value::from(hashes.join(", "))
        ));
    }
    text
}

/// Encodes `image` as PNG with `parameters` in a `tEXt` chunk (`iTXt` when not Latin-1, as A1111 does).
pub fn png_bytes(image: &RgbImage, parameters: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let err = |e: png::EncodingError| SdError::Image {
        what: "output",
        message: e.to_string(),
    };
    let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    if parameters.chars().all(|c| (c as u32) < 256) {
        encoder
            .add_text_chunk("parameters".into(), parameters.into())
            .map_err(err)?;
    } else {
        encoder
            .add_itxt_chunk("parameters".into(), parameters.into())
            .map_err(err)?;
    }
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(image.as_raw()).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(bytes)
}

/// Writes a PNG to `path` through a temporary file, so a failure never leaves half an image.
pub fn write_png(path: &Path, image: &RgbImage, parameters: &str) -> Result<()> {
    let bytes = png_bytes(image, parameters)?;
    let partial = path.with_extension("png.partial");
    std::fs::write(&partial, bytes).map_err(|e| SdError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| SdError::io(path, e))
}

/// The `parameters` text of a PNG, if it has one (for tests and for reproducing an image).
pub fn read_parameters(png_data: &[u8]) -> Option<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_data));
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|chunk| chunk.keyword == "parameters")
        .map(|chunk| chunk.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|chunk| chunk.keyword == "parameters")
                .and_then(|chunk| chunk.get_text().ok())
        })
}
