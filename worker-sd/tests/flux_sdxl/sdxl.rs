//! The SDXL pipeline against diffusers 0.42.1 on the tiny random SDXL pipeline of
//! tests/fixtures/sd/tiny-sdxl/ (both text encoders and tokenizers, the `text_time` UNet, the VAE),
//! recorded by `scripts/reference/sd_sdxl.py`; weights stored in f16, run in f32 on both sides.
//!
//! Tolerances (max absolute difference; each test prints the one it sees): 1e-4 on single model calls
//! and the text encodings (activations of order 1, different summation order); 2e-3 on whole CFG-5
//! generations, latents (reaching about 15) and decoded images alike, where guidance multiplies the
//! UNet's rounding differences at every step; the same on img2img and inpainting, whose init image also
//! goes through the VAE encoder.

use crate::max_diff;
use candle_core::{DType, Device, IndexOp, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::path::PathBuf;
use worker_sd::noise::Noise;
use worker_sd::pipeline::{self, ImagePipeline, LoadOptions, ModelSource, Progress};
use worker_sd::request::{Defaults, GenerationRequest, ValidRequest};
use worker_sd::schedulers::SchedulerConfig;
use worker_sd::sdxl::unet::AddedCond;
use worker_sd::sdxl::{Parts, SdxlError, SdxlPipeline};

/// Single model calls and text encodings.
const TOL: f32 = 1e-4;
/// Whole generations.
const GEN_TOL: f32 = 2e-3;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-sdxl")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn sdxl() -> SdxlPipeline {
    let parts = Parts::from_diffusers(&dir(), &Device::Cpu).unwrap();
    SdxlPipeline::new(parts, &LoadOptions::cpu("tiny-sdxl")).unwrap()
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let diff = max_diff(actual, expected);
    println!("SDXL {what}: max |diff| = {diff:e} (tolerance {tol:e})");
    assert!(diff < tol, "{what} differs from diffusers by {diff}");
}

/// The reference runs' request: "a red cat" against "dog", 64x64, 4 Euler steps, CFG 5.
fn request(change: impl FnOnce(&mut GenerationRequest)) -> ValidRequest {
    let mut request = GenerationRequest {
        prompt: "a red cat".into(),
        negative_prompt: "dog".into(),
        seed: Some(0),
        ..Default::default()
    };
    change(&mut request);
    let defaults = Defaults {
        size: (64, 64),
        steps: 4,
        cfg_scale: 5.0,
        scheduler: "Euler".into(),
        clip_skip: 1,
    };
    request.validate(&defaults, 2).unwrap()
}

/// A reference image `(1, 3, h, w)` in [-1, 1] (on the 8-bit grid) as the picture a request carries.
fn to_rgb(tensor: &Tensor) -> RgbImage {
    worker_sd::output::to_image(&tensor.i(0).unwrap()).unwrap()
}

/// The reference inpainting's request: its image and mask, an empty negative prompt, strength 1.
fn inpaint_request(r: &HashMap<String, Tensor>) -> ValidRequest {
    let mask = (r["inp_mask"].i((0, 0)).unwrap() * 255.0)
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap();
    let mask = GrayImage::from_raw(64, 64, mask.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
    request(|q| {
        q.init_image = Some(to_rgb(&r["inp_image"]));
        q.mask = Some(mask);
        q.negative_prompt = String::new();
    })
}

fn latents_of(p: &SdxlPipeline, request: &ValidRequest, noise: &Tensor, steps: &mut u32) -> Tensor {
    let mut noise = Noise::with_initial(noise.clone(), 0);
    let mut count = |_: &Progress<'_>| {
        *steps += 1;
        Ok(())
    };
    p.denoise_prompts(request, 0, &mut noise, &mut count).unwrap()
}

#[test]
fn sdxl_tokenizers_and_text_encoders_match_diffusers() {
    let r = reference();
    let p = sdxl();
    let (tokens, tokens_2) = p.text().tokens("a red cat", &Device::Cpu).unwrap();
    let ids = |t: &Tensor| t.to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(ids(&tokens), ids(&r["tokens"]));
    // tokenizer_2 pads with its own pad token ("!"), not the end token.
    assert_eq!(ids(&tokens_2), ids(&r["tokens_2"]));
    assert_ne!(ids(&tokens), ids(&tokens_2));

    let prompt = p.text().encode_tokens(&tokens, &tokens_2, 1).unwrap();
    assert_close("context", &prompt.context, &r["text_context"], TOL);
    assert_close("pooled", &prompt.pooled, &r["text_pooled"], TOL);
    let negative = p.text().negative("dog", &prompt, 1, &Device::Cpu).unwrap();
    assert_close(
        "negative context",
        &negative.context,
        &r["text_negative_context"],
        TOL,
    );
    assert_close(
        "negative pooled",
        &negative.pooled,
        &r["text_negative_pooled"],
        TOL,
    );
    let skip2 = p.text().encode("a red cat", 2, &Device::Cpu).unwrap();
    assert_close("clip skip 2", &skip2.context, &r["text_context_skip2"], TOL);

    // An empty negative prompt is zeros (force_zeros_for_empty_prompt), as diffusers does.
    let empty = p.text().negative("", &prompt, 1, &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&empty.context, &prompt.context.zeros_like().unwrap()),
        0.0
    );
    assert_eq!(
        p.info().max_clip_skip,
        2,
        "3-layer encoders: the penultimate layer or the one before"
    );
}

#[test]
fn sdxl_unet_call_matches_diffusers() {
    let r = reference();
    let p = sdxl();
    let unet = p.unet();
    assert!(unet.needs_added_cond());
    let timestep = f64::from(r["unet_timestep"].to_vec1::<f32>().unwrap()[0]);
    let added = AddedCond {
        text_embeds: &r["unet_text_embeds"],
        time_ids: &r["unet_time_ids"],
    };
    let out = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], Some(&added))
        .unwrap();
    assert_close("UNet", &out, &r["unet_out"], TOL);

    // The added conditioning matters: other time ids give another output.
    let other_ids = Tensor::new(&[[512f32, 512., 0., 0., 512., 512.]], &Device::Cpu).unwrap();
    let other = AddedCond {
        time_ids: &other_ids,
        ..added
    };
    let out = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], Some(&other))
        .unwrap();
    let moved = max_diff(&out, &r["unet_out"]);
    assert!(
        moved > 100.0 * TOL,
        "other time ids moved the output by only {moved}"
    );

    let err = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], None)
        .err()
        .unwrap();
    assert!(
        matches!(&err, SdxlError::Config(m) if m.contains("time_ids")),
        "{err}"
    );
}

#[test]
fn sdxl_txt2img_with_cfg_matches_the_diffusers_pipeline() {
    let r = reference();
    let p = sdxl();
    let req = request(|_| {});
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["gen_noise"], &mut steps);
    assert_eq!(steps, 4);
    assert_close("4-step Euler latents", &latents, &r["gen_latents"], GEN_TOL);
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close(
        "4-step Euler image",
        &image.unsqueeze(0).unwrap(),
        &r["gen_image"],
        GEN_TOL,
    );
}

#[test]
fn sdxl_turbo_one_step_euler_a_trailing_without_guidance_matches_diffusers() {
    let r = reference();
    let mut p = sdxl();
    let turbo = SchedulerConfig::from_json(&meta()["turbo_scheduler"].to_string()).unwrap();
    p.set_scheduler(turbo);
    let req = request(|q| {
        q.steps = Some(1);
        q.cfg_scale = Some(0.0);
        q.scheduler = Some("Euler a".into());
        q.negative_prompt = String::new();
    });
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["gen_noise"], &mut steps);
    assert_eq!(steps, 1);
    assert_close("Turbo latents", &latents, &r["turbo_latents"], GEN_TOL);
}

#[test]
fn sdxl_img2img_matches_the_diffusers_pipeline() {
    let r = reference();
    let p = sdxl();
    let req = request(|q| {
        q.init_image = Some(to_rgb(&r["i2i_image"]));
        q.strength = Some(0.75);
        q.negative_prompt = String::new();
    });
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["i2i_noise"], &mut steps);
    assert_eq!(steps, 3, "strength 0.75 of 4 steps runs the last 3");
    assert_close("img2img latents", &latents, &r["i2i_latents"], GEN_TOL);
}

#[test]
fn sdxl_inpainting_with_a_4_channel_unet_matches_the_diffusers_pipeline() {
    let r = reference();
    let p = sdxl();
    assert!(!p.info().inpaint_model);
    let mask = (r["inp_mask"].i((0, 0)).unwrap() * 255.0)
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap();
    let mask = GrayImage::from_raw(64, 64, mask.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
    let req = request(|q| {
        q.init_image = Some(to_rgb(&r["inp_image"]));
        q.mask = Some(mask);
        q.negative_prompt = String::new();
    });
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["inp_noise"], &mut steps);
    assert_eq!(steps, 4);
    assert_close("inpainting latents", &latents, &r["inp_latents"], GEN_TOL);
}

/// A config folder for the single-file checkpoint: the tiny pipeline's, with its own (smaller,
/// 9-channel inpainting) UNet's config, as `from_single_file(config=...)` takes one.
fn single_file_config(home: &std::path::Path) -> PathBuf {
    let folder = home.join("tiny-sdxl-config");
    copy_dir(&dir(), &folder);
    std::fs::remove_file(folder.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let config = meta()["single_file_unet_config"].to_string();
    std::fs::write(folder.join("unet/config.json"), config).unwrap();
    folder
}

#[test]
fn sdxl_single_file_inpainting_checkpoint_maps_to_the_diffusers_names_and_inpaints_as_diffusers() {
    let r = reference();
    let home = tempfile::tempdir().unwrap();
    let config = single_file_config(home.path());
    let file = dir().with_extension("safetensors");
    let folder = Parts::from_diffusers(&dir(), &Device::Cpu).unwrap();
    let single = Parts::from_single_file(&file, Some(&config), false, &Device::Cpu).unwrap();
    // The text encoders and the VAE are the folder's, tensor for tensor.
    for (what, expected, actual) in [
        ("vae", &folder.vae.1, &single.vae.1),
        ("text_encoder", &folder.text_encoder.1, &single.text_encoder.1),
        (
            "text_encoder_2",
            &folder.text_encoder_2.1,
            &single.text_encoder_2.1,
        ),
    ] {
        // transformers 5 saves CLIPTextModel without `text_model.`; the encoder reads either.
        let strip = |m: &HashMap<String, Tensor>| -> HashMap<String, Tensor> {
            m.iter()
                .map(|(k, v)| (k.strip_prefix("text_model.").unwrap_or(k).to_string(), v.clone()))
                .collect()
        };
        let (expected, actual) = (strip(expected), strip(actual));
        let mut names: Vec<_> = expected.keys().collect();
        names.sort();
        let mut got: Vec<_> = actual.keys().collect();
        got.sort();
        assert_eq!(names, got, "{what}: tensor names");
        for name in names {
            let want = expected[name].to_dtype(DType::F32).unwrap();
            let have = actual[name]
                .to_dtype(DType::F32)
                .unwrap()
                .reshape(want.shape())
                .unwrap();
            assert_eq!(max_diff(&have, &want), 0.0, "{what}: {name}");
        }
    }
    // The UNet (with `label_emb`) is mapped right when it computes what diffusers' does. It is a 9-channel
    // inpainting UNet, which the pipeline feeds the mask and the masked image's latents.
    let p = SdxlPipeline::new(single, &LoadOptions::cpu("tiny-sdxl-single")).unwrap();
    assert!(p.info().inpaint_model);
    let timestep = f64::from(r["unet_timestep"].to_vec1::<f32>().unwrap()[0]);
    let added = AddedCond {
        text_embeds: &r["unet_text_embeds"],
        time_ids: &r["unet_time_ids"],
    };
    let out = p
        .unet()
        .forward(&r["sf_unet_latents"], timestep, &r["unet_context"], Some(&added))
        .unwrap();
    assert_close("single-file UNet", &out, &r["sf_unet_out"], TOL);
    let req = inpaint_request(&r);
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["inp_noise"], &mut steps);
    assert_eq!(steps, 4);
    assert_close(
        "9-channel inpainting latents",
        &latents,
        &r["sf_inp_latents"],
        GEN_TOL,
    );

    let source = ModelSource::SingleFile {
        path: file,
        config: Some(config),
    };
    let p = pipeline::load(&source, &LoadOptions::cpu("tiny-sdxl-single")).unwrap();
    assert_eq!(p.info().base, artifacts_contract::ImageBase::Sdxl);
    let mut noise = Noise::with_initial(r["inp_noise"].clone(), 0);
    let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close(
        "9-channel inpainting image from the single file",
        &image.unsqueeze(0).unwrap(),
        &r["sf_inp_image"],
        GEN_TOL,
    );
}

#[test]
fn sdxl_loads_and_generates_through_the_public_api() {
    let source = ModelSource::Diffusers(dir());
    let p = pipeline::load(&source, &LoadOptions::cpu("tiny-sdxl")).unwrap();
    let info = p.info();
    assert_eq!(
        info.base,
        artifacts_contract::ImageBase::Sdxl,
        "detected from the folder"
    );
    // The contract's SDXL defaults (its leading-spacing Euler schedule is not Turbo's).
    assert_eq!((info.defaults.size, info.defaults.steps), ((1024, 1024), 30));
    let run = |seed| {
        let request = GenerationRequest {
            prompt: "a red cat".into(),
            seed: Some(seed),
            steps: Some(2),
            scheduler: Some("euler_a".into()),
            width: Some(64),
            height: Some(80),
            ..Default::default()
        };
        let mut steps = 0;
        let images = pipeline::generate(p.as_ref(), request, Some(1), &mut |progress, _| {
            steps = progress.step;
            Ok(())
        })
        .unwrap();
        assert_eq!(steps, 2);
        images
    };
    let (a, b) = (run(7), run(7));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].image.dimensions(), (64, 80));
    assert_eq!(a[0].image, b[0].image, "same seed, same image");
    assert_ne!(a[0].image, run(8)[0].image, "another seed, another image");
    let png = worker_sd::output::png_bytes(&a[0].image, &a[0].parameters).unwrap();
    let text = worker_sd::output::read_parameters(&png).unwrap();
    assert!(
        text.contains("Sampler: Euler a") && text.contains("Model: tiny-sdxl"),
        "{text}"
    );

    // Bad input is refused by field, and the latent preview works.
    let bad = GenerationRequest {
        prompt: "x".into(),
        width: Some(100),
        ..Default::default()
    };
    let err = pipeline::generate(p.as_ref(), bad, None, &mut |_, _| Ok(()))
        .err()
        .unwrap();
    assert!(
        matches!(err, worker_sd::SdError::Invalid { field: "width", .. }),
        "{err}"
    );
    let preview = p
        .preview(&Tensor::zeros((1, 4, 6, 8), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(preview.dimensions(), (8, 6));
}

#[test]
fn sdxl_turbo_defaults_come_from_the_contract_when_the_schedule_is_trailing() {
    let home = tempfile::tempdir().unwrap();
    let folder = home.path().join("tiny-sdxl-turbo");
    copy_dir(&dir(), &folder);
    let turbo = meta()["turbo_scheduler"].to_string();
    std::fs::write(folder.join("scheduler/scheduler_config.json"), turbo).unwrap();
    let p = pipeline::load(&ModelSource::Diffusers(folder), &LoadOptions::cpu("turbo")).unwrap();
    let d = &p.info().defaults;
    assert_eq!(
        (d.size, d.steps, d.cfg_scale, d.scheduler.as_str()),
        ((512, 512), 1, 0.0, "Euler a")
    );
    // A single file is detected from its tensor names.
    let file = ModelSource::SingleFile {
        path: dir().with_extension("safetensors"),
        config: None,
    };
    assert_eq!(
        pipeline::BASES.iter().find_map(|spec| (spec.detect)(&file)),
        Some(artifacts_contract::ImageBase::Sdxl)
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// tiny-sd15's single file with its CLIP text encoder rewritten the way SD 2.x files store OpenCLIP
/// (`cond_stage_model.model.*`: fused qkv, `ln_1`, `c_fc`, `positional_embedding`...) and one more layer
/// than the config uses, as SD 2.x conditions on ViT-H's penultimate layer.
fn sd2_style_single_file(path: &std::path::Path) {
    let sd15 = dir().with_file_name("tiny-sd15.safetensors");
    let tensors = candle_core::safetensors::load(sd15, &Device::Cpu).unwrap();
    let mut out = HashMap::new();
    let mut layers: HashMap<String, Tensor> = HashMap::new();
    for (name, tensor) in tensors {
        let Some(rest) = name.strip_prefix("cond_stage_model.transformer.text_model.") else {
            out.insert(name, tensor);
            continue;
        };
        let open_clip = match rest {
            "embeddings.position_embedding.weight" => "positional_embedding".to_string(),
            "embeddings.token_embedding.weight" => "token_embedding.weight".to_string(),
            "embeddings.position_ids" => continue,
            _ if rest.starts_with("final_layer_norm.") => rest.replace("final_layer_norm.", "ln_final."),
            _ if rest.contains(".self_attn.q_proj.")
                || rest.contains(".self_attn.k_proj.")
                || rest.contains(".self_attn.v_proj.") =>
            {
                layers.insert(rest.to_string(), tensor);
                continue;
            }
            _ => rest
                .replace("encoder.layers.", "transformer.resblocks.")
                .replace("self_attn.out_proj", "attn.out_proj")
                .replace("layer_norm1", "ln_1")
                .replace("layer_norm2", "ln_2")
                .replace("mlp.fc1", "mlp.c_fc")
                .replace("mlp.fc2", "mlp.c_proj"),
        };
        out.insert(format!("cond_stage_model.model.{open_clip}"), tensor);
    }
    let mut depth = 0;
    while layers.contains_key(&format!("encoder.layers.{depth}.self_attn.q_proj.weight")) {
        for kind in ["weight", "bias"] {
            let part = |p: &str| layers[&format!("encoder.layers.{depth}.self_attn.{p}_proj.{kind}")].clone();
            let fused = Tensor::cat(&[part("q"), part("k"), part("v")], 0).unwrap();
            let name = format!("cond_stage_model.model.transformer.resblocks.{depth}.attn.in_proj_{kind}");
            out.insert(name, fused);
        }
        depth += 1;
    }
    // The layer SD 2.x skips: a copy of the last one under the next index.
    let last: Vec<_> = out
        .iter()
        .filter_map(|(k, v)| {
            let prefix = format!("cond_stage_model.model.transformer.resblocks.{}.", depth - 1);
            let rest = k.strip_prefix(&prefix)?;
            let name = format!("cond_stage_model.model.transformer.resblocks.{depth}.{rest}");
            Some((name, (v * 3.0).unwrap()))
        })
        .collect();
    out.extend(last);
    candle_core::safetensors::save(&out, path).unwrap();
}

#[test]
fn sd2_single_files_with_an_open_clip_text_encoder_load_as_sd2() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("tiny-sd2.safetensors");
    sd2_style_single_file(&path);
    let sd15 = dir().with_file_name("tiny-sd15");
    let folder = worker_sd::sd::Parts::from_diffusers(&sd15, &Device::Cpu).unwrap();
    let single = worker_sd::sd::Parts::from_single_file(&path, Some(&sd15), None, &Device::Cpu).unwrap();
    let text = &folder.text_encoder.1;
    for (name, want) in text.iter().filter(|(k, _)| !k.ends_with("position_ids")) {
        let have = &single.text_encoder.1[name];
        let want = want.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(
            max_diff(&have.to_dtype(DType::F32).unwrap(), &want),
            0.0,
            "{name}"
        );
    }
    let source = ModelSource::SingleFile {
        path: path.clone(),
        config: Some(sd15.clone()),
    };
    let p = pipeline::load(&source, &LoadOptions::cpu("tiny-sd2")).unwrap();
    assert_eq!(
        p.info().base,
        artifacts_contract::ImageBase::Sd2,
        "detected from the OpenCLIP names"
    );
    // It generates what the SD 1.5 file does (same weights): diffusers' image, float16 weights (1.4e-3
    // observed).
    let r = candle_core::safetensors::load(sd15.join("reference.safetensors"), &Device::Cpu).unwrap();
    let defaults = Defaults {
        size: (64, 64),
        steps: 4,
        cfg_scale: 7.5,
        scheduler: "Euler".into(),
        clip_skip: 1,
    };
    let req = GenerationRequest {
        prompt: "a red cat".into(),
        seed: Some(0),
        ..Default::default()
    };
    let req = req.validate(&defaults, 2).unwrap();
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close(
        "SD 2.x-style single file image",
        &image.unsqueeze(0).unwrap(),
        &r["gen_image"],
        1e-2,
    );

    // Without a config folder the text config is read off the tensors, one layer short of the file's.
    let built_in = worker_sd::sd::Parts::from_single_file(
        &path,
        None,
        Some(artifacts_contract::ImageBase::Sd2),
        &Device::Cpu,
    )
    .unwrap();
    let (config, expected) = (&built_in.text_encoder.0, &folder.text_encoder.0);
    assert_eq!(
        (
            config.num_hidden_layers,
            config.hidden_size,
            config.hidden_act.as_str()
        ),
        (expected.num_hidden_layers, expected.hidden_size, "gelu")
    );
}
