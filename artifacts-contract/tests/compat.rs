//! Which worker can run an entry, the reasons it gives, the memory estimate, and normalization.

use artifacts_contract::compat::{check, check_all};
use artifacts_contract::config::ModelConfig;
use artifacts_contract::*;

fn entry(config: TypedConfig, files: Vec<ModelFile>) -> ModelEntry {
    let now = "2026-11-22T00:00:00Z".parse().unwrap();
    ModelEntry {
        id: "file:/m".parse().unwrap(),
        name: "m".into(),
        author: None,
        source: ModelSource::Local,
        source_url: None,
        revision: None,
        path: None,
        size: files.iter().filter_map(|f| f.size).sum(),
        files,
        status: ArtifactStatus::Available,
        added_at: now,
        updated_at: now,
        config,
    }
}

fn weights(path: &str, size: u64) -> ModelFile {
    ModelFile {
        path: path.into(),
        size: Some(size),
        sha256: None,
        role: FileRole::Weights,
        url: None,
    }
}

fn tokenizer_json() -> ModelFile {
    let mut tokenizer = weights("tokenizer.json", 1);
    tokenizer.role = artifacts_contract::FileRole::Tokenizer;
    tokenizer
}

fn llm(family: ModelFamily, format: WeightFormat) -> LlmConfig {
    LlmConfig::new(family, format)
}

#[test]
fn a_supported_gguf_llm_runs_on_worker_llm_only() {
    let mut c = llm(ModelFamily::Llama, WeightFormat::Gguf);
    c.quantization = Some("Q4_K_M".into());
    let e = entry(TypedConfig::Llm(c), vec![weights("m.gguf", 1 << 30)]);
    let all = check_all(&e);
    assert_eq!(all.len(), 2);
    assert!(
        all[0].compatible && all[0].worker == WorkerKind::Llm,
        "{:?}",
        all[0]
    );
    assert!(!all[1].compatible);
    assert_eq!(
        all[1].reasons,
        vec!["worker-sd runs image models, not llm models"]
    );
}

#[test]
fn unsupported_family_names_the_family_and_the_architecture() {
    let mut c = llm(
        ModelFamily::from_architecture("GptOssForCausalLM"),
        WeightFormat::Safetensors,
    );
    c.architecture = "GptOssForCausalLM".into();
    let e = entry(
        TypedConfig::Llm(c),
        vec![weights("model.safetensors", 10), tokenizer_json()],
    );
    let r = check(&e, &WorkerCapabilities::worker_llm(), None);
    assert!(!r.compatible);
    assert_eq!(
        r.reasons,
        vec!["family other (GptOssForCausalLM) is not supported by worker-llm in safetensors files"]
    );
}

#[test]
fn a_safetensors_llm_without_a_tokenizer_json_is_not_promised() {
    let config = || TypedConfig::Llm(llm(ModelFamily::Llama, WeightFormat::Safetensors));
    let caps = WorkerCapabilities::worker_llm();
    let bare = entry(config(), vec![weights("model.safetensors", 10)]);
    assert_eq!(
        check(&bare, &caps, None).reasons,
        vec!["its files hold no tokenizer.json: worker-llm cannot turn text into tokens for it"]
    );
    let whole = entry(config(), vec![weights("model.safetensors", 10), tokenizer_json()]);
    assert!(check(&whole, &caps, None).compatible);
}

#[test]
fn a_file_without_weights_is_not_promised_to_any_worker() {
    let mut c = llm(ModelFamily::Llama, WeightFormat::Gguf);
    c.parameter_count = Some(0);
    let e = entry(TypedConfig::Llm(c), vec![weights("ggml-vocab-llama.gguf", 10)]);
    let r = check(&e, &WorkerCapabilities::worker_llm(), None);
    assert_eq!(
        r.reasons,
        vec![
            "the file holds no weights (a vocabulary-only or header-only file): worker-llm has nothing to run"
        ]
    );
}

#[test]
fn a_family_is_judged_in_its_weight_format() {
    // worker-llm has gemma2 for safetensors only: a GGUF gemma2 must not be promised.
    let caps = WorkerCapabilities::worker_llm();
    let gguf = entry(
        TypedConfig::Llm(llm(ModelFamily::Gemma2, WeightFormat::Gguf)),
        vec![weights("gemma-2-2b.Q4_K_M.gguf", 10)],
    );
    let r = check(&gguf, &caps, None);
    assert_eq!(
        r.reasons,
        vec!["family gemma2 (gemma2) is not supported by worker-llm in gguf files"]
    );
    let st = entry(
        TypedConfig::Llm(llm(ModelFamily::Gemma2, WeightFormat::Safetensors)),
        vec![weights("model.safetensors", 10), tokenizer_json()],
    );
    assert!(check(&st, &caps, None).compatible);
}

#[test]
fn pickle_weights_are_refused_with_the_reason() {
    let e = entry(
        TypedConfig::Llm(llm(ModelFamily::Llama, WeightFormat::Pickle)),
        vec![weights("pytorch_model.bin", 10)],
    );
    let r = check(&e, &WorkerCapabilities::worker_llm(), None);
    assert_eq!(r.reasons.len(), 1, "{:?}", r.reasons);
    assert!(
        r.reasons[0].starts_with("pickle weights are never loaded"),
        "{:?}",
        r.reasons
    );

    let image = entry(
        TypedConfig::Image(ImageConfig::from_base_model("SD 1.5")),
        vec![weights("model.ckpt", 10)],
    );
    let r = check(&image, &WorkerCapabilities::worker_sd(), None);
    assert!(!r.compatible);
    assert!(r.reasons[0].starts_with("pickle weights are never loaded"));
}

#[test]
fn several_reasons_are_all_given() {
    let mut c = llm(ModelFamily::Mixtral, WeightFormat::Gguf);
    c.quantization = Some("IQ2_XS".into());
    let e = entry(TypedConfig::Llm(c), vec![]);
    let mut caps = WorkerCapabilities::worker_llm();
    caps.devices = vec![DeviceKind::Cpu];
    let r = check(&e, &caps, Some(DeviceKind::Metal));
    assert_eq!(
        r.reasons,
        vec![
            "family mixtral (mixtral) is not supported by worker-llm in gguf files",
            "quantization IQ2_XS is not supported by worker-llm",
            "worker-llm was not built for metal",
        ]
    );
}

#[test]
fn image_reasons_cover_base_variant_and_checkpoint_type() {
    let mut lora = ImageConfig::from_base_model("Flux.1 D");
    lora.checkpoint_type = CheckpointType::Lora;
    let r = check(
        &entry(TypedConfig::Image(lora), vec![]),
        &WorkerCapabilities::worker_sd(),
        None,
    );
    assert_eq!(
        r.reasons,
        vec!["a lora is not a whole model: worker-sd loads full checkpoints"]
    );

    let mut sd3 = ImageConfig::from_base_model("SD 3.5 Large");
    sd3.variant = ImageVariant::Depth;
    let r = check(
        &entry(TypedConfig::Image(sd3), vec![]),
        &WorkerCapabilities::worker_sd(),
        None,
    );
    assert_eq!(
        r.reasons,
        vec![
            "base sd3 (SD 3.5 Large) is not supported by worker-sd",
            "depth checkpoints are not supported by worker-sd"
        ]
    );

    let pony = ImageConfig::from_base_model("Pony");
    let r = check(
        &entry(TypedConfig::Image(pony), vec![]),
        &WorkerCapabilities::worker_sd(),
        None,
    );
    assert!(r.compatible, "{:?}", r.reasons);
}

#[test]
fn base_names_normalize_as_the_sources_write_them() {
    for (name, base) in [
        ("SD 1.5", ImageBase::Sd1),
        ("SD 1.5 Hyper", ImageBase::Sd1),
        ("SD 2.1 768", ImageBase::Sd2),
        ("SDXL 1.0", ImageBase::Sdxl),
        ("SDXL Turbo", ImageBase::Sdxl),
        ("Pony", ImageBase::Sdxl),
        ("Illustrious", ImageBase::Sdxl),
        ("NoobAI", ImageBase::Sdxl),
        ("SD 3.5 Large", ImageBase::Sd3),
        ("Flux.1 D", ImageBase::Flux),
        ("Flux.1 S", ImageBase::Flux),
        ("Hunyuan Video", ImageBase::Other),
        ("Other", ImageBase::Other),
    ] {
        assert_eq!(ImageBase::from_source_name(name), base, "{name}");
    }
    assert_eq!(
        Distillation::from_source_name("Flux.1 S"),
        Some(Distillation::Schnell)
    );
    assert_eq!(Distillation::from_source_name("Flux.1 D"), None);
    assert_eq!(
        Distillation::from_source_name("SDXL Lightning"),
        Some(Distillation::Lightning)
    );
}

#[test]
fn architectures_normalize_to_families() {
    for (name, family) in [
        ("LlamaForCausalLM", ModelFamily::Llama),
        ("llama", ModelFamily::Llama),
        ("MistralForCausalLM", ModelFamily::Mistral),
        ("MixtralForCausalLM", ModelFamily::Mixtral),
        ("PhiForCausalLM", ModelFamily::Phi),
        ("Phi3ForCausalLM", ModelFamily::Phi3),
        ("phi3", ModelFamily::Phi3),
        ("Qwen2ForCausalLM", ModelFamily::Qwen2),
        ("qwen3", ModelFamily::Qwen3),
        ("GemmaForCausalLM", ModelFamily::Gemma),
        ("Gemma2ForCausalLM", ModelFamily::Gemma2),
        ("Gemma3ForCausalLM", ModelFamily::Gemma3),
        ("Gemma3ForConditionalGeneration", ModelFamily::Gemma3),
        ("gemma3_text", ModelFamily::Gemma3),
        ("DeepseekV2ForCausalLM", ModelFamily::Deepseek2),
        ("deepseek2", ModelFamily::Deepseek2),
        ("GPT2LMHeadModel", ModelFamily::Other),
        ("", ModelFamily::Other),
    ] {
        assert_eq!(ModelFamily::from_architecture(name), family, "{name}");
    }
}

#[test]
fn inference_params_follow_the_source_then_the_base() {
    let turbo = ImageConfig::from_base_model("SDXL Turbo").inference_params();
    assert_eq!(
        (turbo.steps, turbo.cfg_scale, turbo.resolution.width),
        (1, 0.0, 512)
    );
    let schnell = ImageConfig::from_base_model("Flux.1 S").inference_params();
    assert_eq!((schnell.steps, schnell.cfg_scale), (4, 0.0));
    assert_eq!(schnell.prediction_type, PredictionType::Flow);
    let sd2 = ImageConfig::from_base_model("SD 2.1").inference_params();
    assert_eq!(
        (sd2.resolution.width, sd2.prediction_type),
        (768, PredictionType::VPrediction)
    );
    let mut own = ImageConfig::from_base_model("SD 1.5");
    own.steps = Some(40);
    own.clip_skip = Some(2);
    own.samplers = vec!["Euler a".into()];
    let p = own.inference_params();
    assert_eq!(
        (p.steps, p.clip_skip, p.sampler.as_deref()),
        (40, 2, Some("Euler a"))
    );

    let mut c = llm(ModelFamily::Llama, WeightFormat::Gguf);
    assert_eq!(
        c.inference_params().context_length,
        config::llm::FALLBACK_CONTEXT_LENGTH
    );
    c.sampling.do_sample = Some(false);
    c.sampling.temperature = Some(0.6);
    c.context_length = Some(8192);
    let p = c.inference_params();
    assert_eq!((p.temperature, p.context_length), (0.0, 8192));
}

#[test]
fn memory_estimate_counts_weights_and_kv_cache() {
    let mut c = llm(ModelFamily::Qwen2, WeightFormat::Gguf);
    let weights = 400u64 << 20;
    let unknown_shape = c.memory_estimate(weights);
    assert_eq!(unknown_shape, weights + weights / 10 + (256 << 20));
    // Qwen2.5-0.5B: 24 layers, 2 KV heads of 64 dims; f16 K and V for 8192 tokens = 96 MiB.
    c.num_layers = Some(24);
    c.hidden_size = Some(896);
    c.num_attention_heads = Some(14);
    c.num_kv_heads = Some(2);
    c.context_length = Some(32768);
    assert_eq!(c.memory_estimate(weights), weights + (96 << 20) + (256 << 20));
    let sdxl = ImageConfig::from_base_model("SDXL 1.0");
    assert_eq!(sdxl.memory_estimate(1 << 30), (1 << 30) + (4u64 << 30));
}

#[test]
fn quantization_names_are_matched_case_and_alias_insensitively() {
    let caps = WorkerCapabilities::worker_llm();
    assert!(caps.supports_quantization("q4_k_m"));
    assert!(caps.supports_quantization("fp16"));
    assert!(caps.supports_quantization("BF16"));
    assert!(!caps.supports_quantization("IQ4_XS"));
    assert!(!caps.supports_quantization("MXFP4"));
}

#[test]
fn memory_estimate_uses_the_parameter_count_when_no_file_sizes_are_known() {
    // Llama-3.2-3B as the Hub describes it before download: 3,212,749,824 BF16 parameters, no sizes.
    let mut c = llm(ModelFamily::Llama, WeightFormat::Safetensors);
    c.parameter_count = Some(3_212_749_824);
    c.quantization = Some("BF16".into());
    let e = entry(TypedConfig::Llm(c.clone()), vec![]);
    assert_eq!(e.weight_bytes(), 6_425_499_648);
    let r = check(&e, &WorkerCapabilities::worker_llm(), None);
    assert!(r.memory_bytes > 6_425_499_648, "{}", r.memory_bytes);
    // A 4.85-bit Q4_K_M file of the same model is about 1.95 GB.
    c.quantization = Some("Q4_K_M".into());
    assert_eq!(
        entry(TypedConfig::Llm(c.clone()), vec![]).weight_bytes(),
        1_947_729_581
    );
    // Known file sizes win over the estimate.
    assert_eq!(
        entry(TypedConfig::Llm(c), vec![weights("m.gguf", 2_019_377_696)]).weight_bytes(),
        2_019_377_696
    );
}
