//! The SD 1.x pipeline against diffusers 0.42.1 on the tiny random pipeline, from the tokenizer to the
//! decoded image; see `common.rs` for where the fixtures come from.
//!
//! Tolerances (float32 on CPU on both sides, the observed difference is printed by each test):
//! 1e-4 absolute on single model calls (activations of order 1); 2e-3 on whole generations, where CFG 7.5
//! multiplies the UNet's rounding differences at every step; 5e-3 for inpainting (see `INPAINT_TOL`).

use candle_core::{DType, Device, IndexOp, Tensor};
use image::{GrayImage, RgbImage};
use worker_sd::noise::Noise;
use worker_sd::pipeline::{ImagePipeline, LoadOptions};
use worker_sd::request::GenerationRequest;
use worker_sd::sd::tokenizer::ClipTokenizer;
use worker_sd::sd::{Parts, SdPipeline};

use crate::common::{assert_close, count_steps, dir, pipeline, reference, request};

/// Single model calls.
const TOL: f32 = 1e-4;
/// Whole generations.
const GEN_TOL: f32 = 2e-3;
/// Inpainting, where the masked image also goes through the VAE encoder (observed 3.4e-3).
const INPAINT_TOL: f32 = 5e-3;

/// A reference image tensor `(1, 3, h, w)` in [-1, 1] as the 8-bit picture a request carries.
fn to_rgb(tensor: &Tensor) -> RgbImage {
    worker_sd::output::to_image(tensor).unwrap()
}

#[test]
fn tokenizer_from_vocab_and_merges_matches_transformers() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap();
    let tokenizer = ClipTokenizer::load(&dir().join("tokenizer"), 16).unwrap();
    let ids = tokenizer
        .encode(meta["tokenizer_prompt"].as_str().unwrap())
        .unwrap();
    let expected: Vec<u32> = reference()["tokenizer_ids"]
        .i(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(ids, expected);
}

#[test]
fn text_encoder_and_clip_skip_match_transformers() {
    let r = reference();
    let p = pipeline();
    let out = p.text_encoder().forward(&r["tokens"]).unwrap();
    assert_close(
        "last hidden state",
        &out.last_hidden_state,
        &r["text_hidden"],
        TOL,
    );
    assert_close(
        "penultimate layer",
        &out.hidden_states[0],
        &r["text_penultimate"],
        TOL,
    );
    let skip2 = out.with_clip_skip(p.text_encoder(), 2).unwrap();
    assert_close("clip skip 2", &skip2, &r["text_clip_skip2"], TOL);
}

#[test]
fn unet_call_matches_diffusers() {
    let r = reference();
    let t = r["unet_timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let out = pipeline()
        .unet()
        .forward(&r["unet_latents"], t, &r["text_hidden"])
        .unwrap();
    assert_close("UNet", &out, &r["unet_out"], TOL);
}

#[test]
fn vae_decode_and_encode_match_diffusers() {
    let r = reference();
    let p = pipeline();
    assert_close(
        "VAE decode",
        &p.vae().decode_unscaled(&r["vae_latents"]).unwrap(),
        &r["vae_decoded"],
        TOL,
    );
    assert_close(
        "VAE encode (mode)",
        &p.vae().encode_mode(&r["vae_image"]).unwrap(),
        &r["vae_encoded_mean"],
        TOL,
    );
}

#[test]
fn txt2img_matches_diffusers_given_the_same_noise() {
    let r = reference();
    let p = pipeline();
    let req = request(|_| {});
    let mut steps = 0;
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let image = p
        .generate_one(&req, 0, &mut noise, &mut count_steps(&mut steps))
        .unwrap();
    assert_eq!(steps, 4);
    assert_close(
        "4-step Euler image",
        &image.unsqueeze(0).unwrap(),
        &r["gen_image"],
        GEN_TOL,
    );
    let tokens = |prompt: &str| {
        let t = ClipTokenizer::load(&dir().join("tokenizer"), 16)
            .unwrap()
            .encode(prompt)
            .unwrap();
        Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
    };
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let latents = p
        .denoise_from_tokens(
            &req,
            &tokens("a red cat"),
            &tokens(""),
            0,
            &mut noise,
            &mut |_| Ok(()),
        )
        .unwrap();
    assert_close("4-step Euler latents", &latents, &r["gen_latents"], GEN_TOL);
}

#[test]
fn v_prediction_matches_diffusers() {
    let r = reference();
    let mut options = LoadOptions::cpu("tiny-sd15-v");
    options.prediction_type = Some(artifacts_contract::PredictionType::VPrediction);
    let p = SdPipeline::new(Parts::from_diffusers(&dir(), &Device::Cpu).unwrap(), &options).unwrap();
    let (cond, uncond) = (&r["tokens"], &r["uncond_tokens"]);
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let latents = p
        .denoise_from_tokens(&request(|_| {}), cond, uncond, 0, &mut noise, &mut |_| Ok(()))
        .unwrap();
    assert_close("v-prediction latents", &latents, &r["genv_latents"], GEN_TOL);
}

#[test]
fn img2img_matches_diffusers() {
    let r = reference();
    let p = pipeline();
    // The reference images lie on the 8-bit grid, so the PNG-sized round trip is exact.
    let image = to_rgb(&r["i2i_image"]);
    let req = request(|q| {
        q.init_image = Some(image);
        q.strength = Some(0.5);
    });
    let mut steps = 0;
    let mut noise = Noise::with_initial(r["i2i_noise"].clone(), 0);
    let latents = p
        .denoise_from_tokens(
            &req,
            &r["tokens"],
            &r["uncond_tokens"],
            0,
            &mut noise,
            &mut count_steps(&mut steps),
        )
        .unwrap();
    assert_eq!(steps, 2, "strength 0.5 of 4 steps runs the last 2");
    assert_close("img2img latents", &latents, &r["i2i_latents"], GEN_TOL);
}

#[test]
fn inpainting_with_a_9_channel_unet_matches_diffusers() {
    let r = reference();
    let mut parts = Parts::from_diffusers(&dir(), &Device::Cpu).unwrap();
    let folder = dir().join("unet-inpaint");
    parts.unet = (
        worker_sd::loading::read_config(&folder.join("config.json")).unwrap(),
        worker_sd::loading::load_tensors(&folder.join("diffusion_pytorch_model.safetensors"), &Device::Cpu)
            .unwrap(),
    );
    let p = SdPipeline::new(parts, &LoadOptions::cpu("tiny-sd15-inpaint")).unwrap();
    assert!(p.info().inpaint_model);
    let mask = r["inp_mask"].i((0, 0)).unwrap();
    let mask = (mask * 255.0).unwrap().to_dtype(DType::U8).unwrap();
    let mask = GrayImage::from_raw(64, 64, mask.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
    let req = request(|q| {
        q.init_image = Some(to_rgb(&r["inp_image"]));
        q.mask = Some(mask);
    });
    let mut noise = Noise::with_initial(r["inp_noise"].clone(), 0);
    let latents = p
        .denoise_from_tokens(
            &req,
            &r["tokens"],
            &r["uncond_tokens"],
            0,
            &mut noise,
            &mut |_| Ok(()),
        )
        .unwrap();
    assert_close("inpainting latents", &latents, &r["inp_latents"], INPAINT_TOL);
}

#[test]
fn same_seed_same_image_and_parameters_in_the_png() {
    let p = pipeline();
    let run = |p: &SdPipeline, seed| {
        let request = GenerationRequest {
            prompt: "a red cat".into(),
            negative_prompt: "dog".into(),
            seed: Some(seed),
            steps: Some(3),
            scheduler: Some("euler_a".into()),
            batch_size: Some(2),
            width: Some(64),
            height: Some(64),
            ..Default::default()
        };
        worker_sd::pipeline::generate(p, request, None, &mut |_, _| Ok(())).unwrap()
    };
    let (a, b, c) = (run(&p, 7), run(&p, 7), run(&p, 8));
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].seed, a[1].seed), (7, 8));
    assert_eq!(a[0].image, b[0].image, "same seed, same image");
    assert_ne!(a[0].image, a[1].image, "each image of a batch has its own seed");
    assert_eq!(a[1].image, c[0].image, "image 2 of seed 7 is image 1 of seed 8");
    let png = worker_sd::output::png_bytes(&a[0].image, &a[0].parameters).unwrap();
    let text = worker_sd::output::read_parameters(&png).unwrap();
    assert_eq!(
        text,
        "a red cat\nNegative prompt: dog\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 7, Size: 64x64, Model: tiny-sd15"
    );
    let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(decoded, a[0].image);
}

#[test]
fn every_scheduler_runs_txt2img_and_img2img() {
    let p = pipeline();
    let r = reference();
    for name in worker_sd::schedulers::names() {
        // Flow-matching schedulers (Flux) refuse epsilon models: a 400 naming the field, tested below.
        if worker_sd::schedulers::build(name, &Default::default(), 4).is_err() {
            let req = request(|q| q.scheduler = Some(name.into()));
            let err = p
                .denoise_from_tokens(
                    &req,
                    &r["tokens"],
                    &r["uncond_tokens"],
                    0,
                    &mut Noise::seeded(1),
                    &mut |_| Ok(()),
                )
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    worker_sd::SdError::Invalid {
                        field: "scheduler",
                        ..
                    }
                ),
                "{name}: {err}"
            );
            continue;
        }
        for init in [None, Some(to_rgb(&r["i2i_image"]))] {
            let req = request(|q| {
                q.scheduler = Some(name.into());
                q.init_image = init;
            });
            let latents = p
                .denoise_from_tokens(
                    &req,
                    &r["tokens"],
                    &r["uncond_tokens"],
                    0,
                    &mut Noise::seeded(1),
                    &mut |_| Ok(()),
                )
                .unwrap();
            let max = latents
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(max.is_finite() && max < 100.0, "{name}: latents blow up ({max})");
        }
    }
}

#[test]
fn single_file_checkpoint_maps_to_the_diffusers_tensors() {
    let folder = Parts::from_diffusers(&dir(), &Device::Cpu).unwrap();
    let file = dir().with_extension("safetensors");
    let single = Parts::from_single_file(&file, Some(&dir()), None, &Device::Cpu).unwrap();
    for (what, expected, actual) in [
        ("unet", &folder.unet.1, &single.unet.1),
        ("vae", &folder.vae.1, &single.vae.1),
        ("text_encoder", &folder.text_encoder.1, &single.text_encoder.1),
    ] {
        let mut names: Vec<_> = expected.keys().collect();
        names.sort();
        let mut got: Vec<_> = actual.keys().collect();
        got.sort();
        assert_eq!(names, got, "{what}: tensor names");
        for name in names {
            // The single file is float16: compare with the folder's float32 weights rounded the same way.
            let want = expected[name]
                .to_dtype(DType::F16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let have = actual[name]
                .to_dtype(DType::F32)
                .unwrap()
                .reshape(want.shape())
                .unwrap();
            assert_eq!(crate::common::max_diff(&have, &want), 0.0, "{what}: {name}");
        }
    }
    let p = worker_sd::pipeline::load(
        &worker_sd::pipeline::ModelSource::SingleFile {
            path: file,
            config: Some(dir()),
        },
        &LoadOptions::cpu("tiny-sd15-single"),
    )
    .unwrap();
    assert_eq!(p.info().base, artifacts_contract::ImageBase::Sd1);
    let r = reference();
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let image = p
        .generate_one(&request(|_| {}), 0, &mut noise, &mut |_| Ok(()))
        .unwrap();
    // float16 weights: the image drifts further from the float32 reference.
    assert_close(
        "image from the single file",
        &image.unsqueeze(0).unwrap(),
        &r["gen_image"],
        5e-2,
    );
}

#[test]
fn pickle_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.ckpt");
    std::fs::write(&path, b"pickle").unwrap();
    let source = worker_sd::pipeline::ModelSource::SingleFile { path, config: None };
    let err = worker_sd::pipeline::load(&source, &LoadOptions::cpu("x"))
        .err()
        .unwrap();
    assert!(matches!(err, worker_sd::SdError::Pickle { .. }), "{err}");
}

#[test]
fn an_unknown_catalog_id_says_how_to_add_it() {
    let home = tempfile::tempdir().unwrap();
    let catalog = catalog::Catalog::open(home.path()).unwrap();
    let id: artifacts_contract::CatalogId = "hf:nobody/no-such-model".parse().unwrap();
    let err = worker_sd::resolve::resolve(
        &catalog,
        &id,
        artifacts_contract::DeviceKind::Cpu,
        LoadOptions::cpu("x"),
    )
    .err()
    .unwrap();
    assert!(matches!(err, worker_sd::SdError::Catalog(_)), "{err}");
    assert!(
        err.to_string().contains("catalog add hf:nobody/no-such-model"),
        "{err}"
    );
}

#[test]
fn a_separate_vae_replaces_the_models() {
    let r = reference();
    let mut options = LoadOptions::cpu("tiny-sd15");
    options.vae = Some(dir().join("vae"));
    let p = SdPipeline::new(Parts::from_diffusers(&dir(), &Device::Cpu).unwrap(), &options).unwrap();
    assert_close(
        "separate VAE decode",
        &p.vae().decode_unscaled(&r["vae_latents"]).unwrap(),
        &r["vae_decoded"],
        TOL,
    );
    options.vae = Some(dir().join("no-such-vae.safetensors"));
    let err = SdPipeline::new(Parts::from_diffusers(&dir(), &Device::Cpu).unwrap(), &options)
        .err()
        .unwrap();
    assert!(err.to_string().contains("no-such-vae.safetensors"), "{err}");
}
