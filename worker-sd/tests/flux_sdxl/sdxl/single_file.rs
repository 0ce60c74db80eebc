//! SDXL and SD 2.x single-file checkpoints (original LDM and OpenCLIP names) against diffusers: the tiny
//! SDXL pipeline's 9-channel inpainting file, and tiny-sd15 rewritten in SD 2.x's layout.

use super::*;

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
