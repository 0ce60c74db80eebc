//! Flux against diffusers on the tiny random models of `scripts/reference/sd_flux.py`
//! (tests/fixtures/sd/tiny-flux/): the flow-matching schedule, one transformer call from each weight layout,
//! the text encoders and VAE, and a whole 4-step FLUX.1-dev-shaped generation from the same noise; `seam`
//! goes from prompts to pictures through the worker's pipeline seam (txt2img, img2img, inpainting).
//!
//! Tolerances: sigmas and timesteps within 1e-6 relative (diffusers rounds them to f32); single model
//! calls within 1e-4 absolute on values of order 1 (f32 on both sides, different summation order); the
//! whole generation within 5e-4.

mod lora;
mod seam;

use crate::max_diff;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use worker_sd::flux::pipeline::{FluxPipeline, FluxRequest};
use worker_sd::flux::{FluxError, FluxTransformer, TransformerConfig};
use worker_sd::schedulers::{FlowMatchConfig, FlowMatchEuler, Scheduler};

/// Absolute tolerance on single model calls (transformer, text encoders, VAE decode).
const OUT_TOL: f32 = 1e-4;
/// Absolute tolerance on a whole 4-step generation, where call errors add up.
const GEN_TOL: f32 = 5e-4;

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-flux")
}

pub(crate) fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu).unwrap()
}

#[derive(Deserialize)]
struct Meta {
    schedulers: HashMap<String, FlowMatchConfig>,
    schedules: Vec<Schedule>,
}

#[derive(Deserialize)]
struct Schedule {
    config: String,
    steps: usize,
    image_seq_len: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

fn meta() -> Meta {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap()
}

#[test]
fn flow_match_schedules_match_diffusers() {
    let meta = meta();
    assert!(meta.schedules.len() >= 10);
    for case in &meta.schedules {
        let config = &meta.schedulers[&case.config];
        let s = FlowMatchEuler::new(config, case.steps, case.image_seq_len).unwrap();
        let what = format!(
            "{} {} steps, {} tokens",
            case.config, case.steps, case.image_seq_len
        );
        for (name, actual, expected) in [
            ("sigmas", s.sigmas().unwrap(), &case.sigmas),
            ("timesteps", s.timesteps(), &case.timesteps),
        ] {
            assert_eq!(actual.len(), expected.len(), "{what}: {name}");
            for (a, e) in actual.iter().zip(expected.iter()) {
                assert!(
                    (a - e).abs() <= 1e-6 * (1.0 + e.abs()),
                    "{what}: {name} {a} vs {e}"
                );
            }
        }
    }
}

#[test]
fn flow_match_step_moves_along_the_velocity() {
    let config = FlowMatchConfig::default();
    let mut s = FlowMatchEuler::new(&config, 4, 16).unwrap();
    let x = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
    let v = Tensor::new(&[4.0f32, -4.0], &Device::Cpu).unwrap();
    // Sigmas 1, 0.75, ...: the step is -0.25 v.
    let next = s.step(&v, 0, &x, None).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(next, vec![0.0, 3.0]);
}

fn transformer_call(model: &FluxTransformer, prefix: &str, r: &HashMap<String, Tensor>) -> f32 {
    max_diff(&transformer_out(model, prefix, r), &r[&format!("{prefix}_out")])
}

/// One transformer call on the recorded `{prefix}_*` inputs.
pub(crate) fn transformer_out(model: &FluxTransformer, prefix: &str, r: &HashMap<String, Tensor>) -> Tensor {
    let get = |k: &str| r[&format!("{prefix}_{k}")].clone();
    model
        .forward(
            &get("img"),
            &get("img_ids").unsqueeze(0).unwrap(),
            &get("txt"),
            &get("txt_ids").unsqueeze(0).unwrap(),
            &get("timestep"),
            &get("vec"),
            r.get(&format!("{prefix}_guidance")),
        )
        .unwrap()
}

#[test]
fn dev_transformer_from_the_diffusers_folder_matches_diffusers() {
    let model =
        FluxTransformer::load_diffusers_folder(&fixtures().join("dev/transformer"), DType::F32, &Device::Cpu)
            .unwrap();
    assert!(model.config().guidance_embeds);
    let r = reference();
    let diff = transformer_call(&model, "dev", &r);
    println!("dev transformer max |diff| = {diff:e}");
    assert!(diff < OUT_TOL, "max |candle - diffusers| = {diff}");

    // A dev-style transformer without a guidance scale is an error, not a silent schnell-style run.
    let get = |k: &str| r[&format!("dev_{k}")].clone();
    let (img_ids, txt_ids) = (
        get("img_ids").unsqueeze(0).unwrap(),
        get("txt_ids").unsqueeze(0).unwrap(),
    );
    let err = model
        .forward(
            &get("img"),
            &img_ids,
            &get("txt"),
            &txt_ids,
            &get("timestep"),
            &get("vec"),
            None,
        )
        .err()
        .unwrap();
    assert!(
        matches!(&err, FluxError::Config(m) if m.contains("guidance")),
        "{err}"
    );
}

#[test]
fn schnell_single_file_in_the_original_layout_matches_diffusers() {
    let json = std::fs::read_to_string(fixtures().join("schnell.json")).unwrap();
    let config = TransformerConfig::from_json(&json).unwrap();
    let path = fixtures().join("schnell.safetensors");
    let model = FluxTransformer::load_file(&path, Some(config.clone()), DType::F32, &Device::Cpu).unwrap();
    assert!(!model.config().guidance_embeds);
    let diff = transformer_call(&model, "schnell", &reference());
    println!("schnell transformer max |diff| = {diff:e}");
    assert!(diff < OUT_TOL, "max |candle - diffusers| = {diff}");

    // Without a config, the shape is read from the tensors; only the rotary split cannot be, and the
    // tiny model's 16-wide heads are not FLUX.1's 128, which is refused by name.
    let err = FluxTransformer::load_file(&path, None, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(&err, FluxError::Config(m) if m.contains("16 wide")),
        "{err}"
    );
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let (_, tensors) = worker_sd::flux::weights::normalize(tensors).unwrap();
    let inferred = TransformerConfig::infer_with_axes(&tensors, &config.axes_dims_rope).unwrap();
    assert_eq!(
        inferred,
        TransformerConfig {
            out_channels: None,
            ..config
        }
    );
}

#[test]
fn bad_flux_weights_are_refused_by_name() {
    let dir = fixtures();
    let err = FluxTransformer::load_file(&dir.join("schnell.json"), None, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, FluxError::NotSafetensors(_)), "{err}");

    let mut tensors = candle_core::safetensors::load(
        dir.join("dev/transformer/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    tensors.remove("transformer_blocks.1.attn.add_k_proj.bias");
    let err = FluxTransformer::from_tensors(tensors, None, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(&err, FluxError::MissingTensor(name) if name == "transformer_blocks.1.attn.add_k_proj.bias"),
        "{err}"
    );

    let other = HashMap::from([(
        "conv_in.weight".to_string(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    )]);
    let err = FluxTransformer::from_tensors(other, None, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, FluxError::Layout(_)), "{err}");
}

#[test]
fn whole_dev_generation_matches_flux_pipeline() {
    let r = reference();
    let pipe =
        FluxPipeline::load_diffusers_folder(&fixtures().join("dev"), DType::F32, &Device::Cpu).unwrap();
    let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
    let (t5, pooled) = pipe
        .encode_prompt(&to_u32(&r["t5_tokens"]), &to_u32(&r["clip_tokens"]))
        .unwrap();
    let t5_diff = max_diff(&t5, &r["t5_hidden"]);
    let clip_diff = max_diff(&pooled, &r["clip_pooled"]);
    assert!(
        t5_diff < OUT_TOL && clip_diff < OUT_TOL,
        "T5 {t5_diff}, CLIP pooled {clip_diff}"
    );

    let decoded = pipe.vae_decode_raw(&r["vae_latents"]).unwrap();
    let vae_diff = max_diff(&decoded, &r["vae_decoded"]);
    assert!(vae_diff < OUT_TOL, "VAE decode {vae_diff}");

    let mut progress = Vec::new();
    let request = FluxRequest {
        t5_tokens: &to_u32(&r["t5_tokens"]),
        clip_tokens: &to_u32(&r["clip_tokens"]),
        height: 64,
        width: 64,
        steps: 4,
        guidance: 3.5,
        noise: &r["gen_noise"],
    };
    let (latents, image) = pipe
        .generate(&request, &mut |done, total| progress.push((done, total)))
        .unwrap();
    assert_eq!(progress, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    let latent_diff = max_diff(&latents, &r["gen_latents"]);
    let image_diff = max_diff(&image, &r["gen_image"]);
    println!(
        "T5 {t5_diff:e}, CLIP {clip_diff:e}, VAE {vae_diff:e}, latents {latent_diff:e}, image {image_diff:e}"
    );
    assert!(
        latent_diff < GEN_TOL && image_diff < GEN_TOL,
        "latents {latent_diff}, image {image_diff}"
    );
}

#[test]
fn sizes_that_do_not_pack_are_refused() {
    let pipe =
        FluxPipeline::load_diffusers_folder(&fixtures().join("dev"), DType::F32, &Device::Cpu).unwrap();
    // The tiny VAE has FLUX.1's 8x scale, and packing halves it again: multiples of 16.
    assert_eq!(pipe.latent_shape(64, 32).unwrap(), (16, 8, 4));
    for (h, w) in [(72, 64), (64, 0)] {
        let err = pipe.latent_shape(h, w).err().unwrap();
        assert!(
            matches!(&err, FluxError::Size(m) if m.contains("multiples of 16")),
            "{err}"
        );
    }
}

#[test]
fn packing_takes_2x2_patches_channel_first_and_unpacks_back() {
    use worker_sd::flux::pipeline::{pack, unpack};
    let x = Tensor::arange(0f32, 32.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 2, 4, 4))
        .unwrap();
    let packed = pack(&x).unwrap();
    assert_eq!(packed.dims(), &[1, 4, 8]);
    // Token 1 is the patch at rows 0-1, columns 2-3: channel 0's 2, 3, 6, 7, then channel 1's (+16).
    let token: Vec<f32> = packed.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
    assert_eq!(token, vec![2.0, 3.0, 6.0, 7.0, 18.0, 19.0, 22.0, 23.0]);
    assert_eq!(max_diff(&unpack(&packed, 4, 4).unwrap(), &x), 0.0);
}
