//! SDXL LoRAs against diffusers' `load_lora_weights`: PEFT names and kohya's SDXL names (the UNet's
//! original `input_blocks_*` modules, `lora_te1_`/`lora_te2_`), recorded by
//! `scripts/reference/sd_lora_sdxl.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use artifacts_contract::ImageBase;
use candle_core::{Device, Tensor};
use worker_sd::lora::{ActiveLora, Library};
use worker_sd::noise::Noise;
use worker_sd::pipeline::ImagePipeline;
use worker_sd::rng::RngKind;

use super::{GEN_TOL, assert_close, request, sdxl};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/lora")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("sdxl-reference.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn sdxl_peft_and_kohya_loras_match_diffusers() {
    let (r, p) = (reference(), sdxl());
    let library = Library::new(None);
    let run = |lora: Option<&str>| {
        let mut req = request(|r| {
            r.negative_prompt = String::new();
            r.rng = Some("torch-cpu".into());
        });
        req.loras = lora
            .map(|name| ActiveLora {
                file: library
                    .resolve(&dir().join(name).display().to_string(), ImageBase::Sdxl)
                    .unwrap(),
                weight: 0.8,
            })
            .into_iter()
            .collect();
        let mut noise = Noise::new(RngKind::TorchCpu, 0);
        let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
        (image.unsqueeze(0).unwrap(), p.prepare_loras(&req.loras).unwrap())
    };
    assert_close("no LoRA", &run(None).0, &r["plain_image"], GEN_TOL);
    let (image, reports) = run(Some("sdxl-peft.safetensors"));
    assert_close("PEFT LoRA x0.8", &image, &r["lora_image"], GEN_TOL);
    assert_eq!(reports[0].applied, reports[0].total, "{reports:?}");
    let (image, reports) = run(Some("sdxl-kohya.safetensors"));
    assert_close("kohya SDXL LoRA x0.8", &image, &r["lora_image"], GEN_TOL);
    assert_eq!(reports[0].applied, reports[0].total, "{reports:?}");
    assert_close("no LoRA again", &run(None).0, &r["plain_image"], GEN_TOL);
}
