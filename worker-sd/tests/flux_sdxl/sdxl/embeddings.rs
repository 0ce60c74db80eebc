//! An SDXL textual-inversion embedding (`clip_l` and `clip_g`) against diffusers' `load_textual_inversion`
//! into both encoders, recorded by `scripts/reference/sd_embeddings.py`.

use std::path::PathBuf;

use artifacts_contract::ImageBase;
use candle_core::Device;
use worker_sd::lora::Library;
use worker_sd::noise::Noise;
use worker_sd::pipeline::ImagePipeline;
use worker_sd::rng::RngKind;

use super::{GEN_TOL, TOL, assert_close, request, sdxl};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/embeddings")
}

#[test]
fn an_sdxl_embedding_matches_diffusers_in_both_encoders() {
    let r = candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap();
    let p = sdxl();
    let prompt = "a xlstyle red cat";
    let found = Library::new(None)
        .with_embeddings_dir(Some(dir()))
        .embeddings_in(&[prompt], ImageBase::Sdxl)
        .unwrap();
    assert_eq!(found.len(), 1);
    let encoded = p.text().encode_with(prompt, &found, 1, &Device::Cpu).unwrap();
    assert_close("context with xlstyle", &encoded.context, &r["sdxl_context"], TOL);
    assert_close("pooled with xlstyle", &encoded.pooled, &r["sdxl_pooled"], TOL);
    let mut req = request(|r| {
        r.prompt = prompt.into();
        r.negative_prompt = String::new();
        r.rng = Some("torch-cpu".into());
    });
    req.embeddings = found;
    let mut noise = Noise::new(RngKind::TorchCpu, 0);
    let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close(
        "image with xlstyle",
        &image.unsqueeze(0).unwrap(),
        &r["sdxl_image"],
        GEN_TOL,
    );
}
