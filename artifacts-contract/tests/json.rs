//! The JSON wire format: field names, enum values, round trips and tolerance of other versions.
//!
//! The expected files in `tests/expected/` were written by hand from the contract's specification (the
//! names tools outside the project rely on), not produced by this code.

use artifacts_contract::config::{AudioConfig, VideoConfig};
use artifacts_contract::*;
use chrono::{DateTime, Utc};
use serde_json::Value;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn expected(name: &str) -> Value {
    let path = format!("{}/tests/expected/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn llm_entry() -> ModelEntry {
    let mut config = LlmConfig::new(ModelFamily::Qwen2, WeightFormat::Gguf);
    config.architecture = "qwen2".into();
    config.tokenizer = TokenizerInfo {
        bos: Some("<|endoftext|>".into()),
        eos: vec!["<|im_end|>".into(), "<|endoftext|>".into()],
        pad: Some("<|endoftext|>".into()),
        unk: None,
        bos_id: None,
        eos_ids: vec![151645, 151643],
        add_bos_token: Some(false),
        chat_template: Some(
            "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into(),
        ),
    };
    config.context_length = Some(32768);
    config.quantization = Some("Q4_K_M".into());
    config.parameter_count = Some(494032768);
    config.num_layers = Some(24);
    config.hidden_size = Some(896);
    config.num_attention_heads = Some(14);
    config.num_kv_heads = Some(2);
    config.vocab_size = Some(151936);
    config.sampling = SamplingDefaults {
        temperature: Some(0.7),
        top_p: Some(0.8),
        top_k: Some(20),
        repetition_penalty: Some(1.05),
        ..Default::default()
    };
    config.languages = vec!["en".into(), "zh".into()];
    config.base_model = Some("Qwen/Qwen2.5-0.5B-Instruct".into());
    config.license = Some("apache-2.0".into());
    config.tags = vec!["chat".into(), "gguf".into()];
    config.downloads = Some(120000);
    config.likes = Some(42);
    let rev = "9b5bd9b6c5b6a0b9e1f2d3c4a5b6c7d8e9f00112";
    ModelEntry {
        id: "hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M".parse().unwrap(),
        name: "Qwen2.5-0.5B-Instruct-GGUF".into(),
        author: Some("bartowski".into()),
        source: ModelSource::HuggingFace,
        source_url: Some("https://huggingface.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF".into()),
        revision: Some(rev.into()),
        path: Some(format!(
            "/home/u/.cache/huggingface/hub/models--bartowski--Qwen2.5-0.5B-Instruct-GGUF/snapshots/{rev}"
        )),
        size: 397808192,
        files: vec![ModelFile {
            path: "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf".into(),
            size: Some(397808192),
            sha256: Some("6eb923e7d26e9cea28811e1a8e852009b21242fb157b26149d3b188f3a8c8653".into()),
            role: FileRole::Weights,
            url: None,
        }],
        status: ArtifactStatus::Downloading {
            downloaded_bytes: 1048576,
            total_bytes: Some(397808192),
        },
        added_at: at("2026-11-22T10:00:00Z"),
        updated_at: at("2026-11-22T10:05:30Z"),
        config: TypedConfig::Llm(config),
    }
}

fn image_entry() -> ModelEntry {
    let mut config = ImageConfig::from_base_model("SD 1.5");
    config.prediction_type = Some(PredictionType::Epsilon);
    config.vae = Some("vae-ft-mse-840000-ema-pruned".into());
    config.clip_skip = Some(1);
    config.resolution = Some(Resolution {
        width: 512,
        height: 768,
    });
    config.trigger_words = vec!["analog style".into()];
    config.samplers = vec!["DPM++ SDE Karras".into()];
    config.steps = Some(25);
    config.cfg_scale = Some(5.5);
    config.nsfw = true;
    config.license = Some("creativeml-openrail-m".into());
    config.tags = vec!["photorealistic".into(), "base model".into()];
    config.preview_images = vec![
        PreviewImage {
            url: "https://image.civitai.com/x/1.jpeg".into(),
            width: Some(512),
            height: Some(768),
            nsfw: false,
        },
        PreviewImage {
            url: "https://image.civitai.com/x/2.jpeg".into(),
            width: None,
            height: None,
            nsfw: true,
        },
    ];
    config.downloads = Some(1500000);
    config.likes = Some(90000);
    ModelEntry {
        id: "civitai:4201@130072".parse().unwrap(),
        name: "Realistic Vision V6.0 B1".into(),
        author: Some("SG_161222".into()),
        source: ModelSource::CivitAi,
        source_url: Some("https://civitai.com/models/4201?modelVersionId=130072".into()),
        revision: Some("130072".into()),
        path: None,
        size: 2132625894,
        files: vec![ModelFile {
            path: "realisticVisionV60B1_v51VAE.safetensors".into(),
            size: Some(2132625894),
            sha256: Some("15012c538f503ce2ebfc2c8547b268c75ccdaff7a281db55399940ff1d70e21d".into()),
            role: FileRole::Weights,
            url: Some("https://civitai.com/api/download/models/130072".into()),
        }],
        status: ArtifactStatus::NotDownloaded,
        added_at: at("2026-11-22T10:00:00Z"),
        updated_at: at("2026-11-22T10:00:00Z"),
        config: TypedConfig::Image(config),
    }
}

fn audio_entry() -> ModelEntry {
    ModelEntry {
        id: "hf:openai/whisper-tiny".parse().unwrap(),
        name: "whisper-tiny".into(),
        author: Some("openai".into()),
        source: ModelSource::HuggingFace,
        source_url: None,
        revision: None,
        path: None,
        size: 151061672,
        files: vec![ModelFile {
            path: "model.safetensors".into(),
            size: Some(151061672),
            sha256: None,
            role: FileRole::Weights,
            url: None,
        }],
        status: ArtifactStatus::Failed {
            error: "sha256 mismatch for model.safetensors".into(),
        },
        added_at: at("2026-11-22T10:00:00Z"),
        updated_at: at("2026-11-22T10:00:00Z"),
        config: TypedConfig::Audio(AudioConfig {
            architecture: Some("WhisperForConditionalGeneration".into()),
            task: Some("automatic-speech-recognition".into()),
            sample_rate: Some(16000),
            languages: vec!["en".into(), "fr".into()],
            license: Some("apache-2.0".into()),
            tags: vec!["audio".into()],
        }),
    }
}

fn video_entry() -> ModelEntry {
    ModelEntry {
        id: "file:/models/wan2.1-t2v-1.3b.safetensors".parse().unwrap(),
        name: "wan2.1-t2v-1.3b".into(),
        author: None,
        source: ModelSource::Local,
        source_url: None,
        revision: None,
        path: Some("/models/wan2.1-t2v-1.3b.safetensors".into()),
        size: 2838000000,
        files: vec![ModelFile {
            path: "wan2.1-t2v-1.3b.safetensors".into(),
            size: Some(2838000000),
            sha256: None,
            role: FileRole::Weights,
            url: None,
        }],
        status: ArtifactStatus::Available,
        added_at: at("2026-11-22T10:00:00Z"),
        updated_at: at("2026-11-22T10:00:00Z"),
        config: TypedConfig::Video(VideoConfig {
            base_model: Some("Wan Video".into()),
            resolution: Some(Resolution {
                width: 832,
                height: 480,
            }),
            frames: Some(81),
            fps: Some(16),
            ..Default::default()
        }),
    }
}

#[test]
fn each_model_type_serializes_to_its_expected_file() {
    for (entry, file) in [
        (llm_entry(), "llm-entry.json"),
        (image_entry(), "image-entry.json"),
        (audio_entry(), "audio-entry.json"),
        (video_entry(), "video-entry.json"),
    ] {
        let written = serde_json::to_value(&entry).unwrap();
        assert_eq!(written, expected(file), "{file}");
        let read: ModelEntry = serde_json::from_value(expected(file)).unwrap();
        assert_eq!(read, entry, "{file}");
        assert_eq!(read.model_type().as_str(), expected(file)["modelType"], "{file}");
    }
}

#[test]
fn every_type_round_trips_through_json() {
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), v, "{text}");
    }
    for e in [llm_entry(), image_entry(), audio_entry(), video_entry()] {
        round_trip(e.config.clone());
        round_trip(e.status.clone());
        round_trip(e.files.clone());
        round_trip(e.id.clone());
        round_trip(e);
    }
    for f in ModelFamily::ALL {
        round_trip(f);
    }
    for t in ModelType::ALL {
        round_trip(t);
    }
    round_trip(WorkerCapabilities::worker_llm());
    round_trip(WorkerCapabilities::worker_sd());
    round_trip(compat::check(
        &image_entry(),
        &WorkerCapabilities::worker_sd(),
        Some(DeviceKind::Cuda),
    ));
    for s in [Distillation::Turbo, Distillation::Schnell] {
        round_trip(s);
    }
    for c in [
        CheckpointType::Lora,
        CheckpointType::Embedding,
        CheckpointType::Vae,
    ] {
        round_trip(c);
    }
    round_trip(Gated::Manual);
    round_trip(ModelSource::Local);
}

#[test]
fn json_from_a_newer_version_is_read_unknown_fields_and_values_ignored() {
    let mut v = expected("llm-entry.json");
    v["futureField"] = Value::from(1);
    v["config"]["futureConfigField"] = Value::from("x");
    v["config"]["modelFamily"] = Value::from("llama9");
    v["files"][0]["role"] = Value::from("hologram");
    let read: ModelEntry = serde_json::from_value(v).unwrap();
    let config = read.config.as_llm().unwrap();
    assert_eq!(config.model_family, ModelFamily::Other);
    assert_eq!(read.files[0].role, FileRole::Other);
    assert_eq!(config.context_length, Some(32768));
}

#[test]
fn json_from_an_older_version_fills_missing_optional_fields() {
    let minimal = serde_json::json!({
        "id": "hf:a/b", "name": "b", "source": "huggingface", "status": {"state": "available"},
        "addedAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        "modelType": "llm", "config": {"format": "safetensors", "modelFamily": "other", "architecture": "other"}
    });
    let read: ModelEntry = serde_json::from_value(minimal.clone()).unwrap();
    assert_eq!(read.size, 0);
    assert!(read.files.is_empty());
    let config = read.config.as_llm().unwrap();
    assert_eq!(config.model_family, ModelFamily::Other);
    assert_eq!(config.gated, Gated::Open);
    assert!(config.tokenizer.eos.is_empty());
    // The family and the architecture are what a UI narrows on: never optional.
    for field in ["modelFamily", "architecture"] {
        let mut without = minimal.clone();
        without["config"].as_object_mut().unwrap().remove(field);
        let err = serde_json::from_value::<ModelEntry>(without)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn model_type_and_config_cannot_disagree() {
    let mut v = expected("llm-entry.json");
    v["modelType"] = Value::from("image");
    let err = serde_json::from_value::<ModelEntry>(v).unwrap_err().to_string();
    assert!(
        err.contains("base"),
        "an LLM config read as an image config must fail: {err}"
    );
    let mut v = expected("image-entry.json");
    v["modelType"] = Value::from("llm");
    let err = serde_json::from_value::<ModelEntry>(v).unwrap_err().to_string();
    assert!(
        err.contains("missing field"),
        "an image config read as an LLM config must fail: {err}"
    );
    let mut v = expected("image-entry.json");
    v["modelType"] = Value::from("hologram");
    assert!(serde_json::from_value::<ModelEntry>(v).is_err());
}

#[test]
fn the_names_outside_tools_rely_on_are_where_they_say() {
    let llm = serde_json::to_value(llm_entry()).unwrap();
    for (pointer, want) in [
        (
            "/id",
            Value::from("hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
        ),
        ("/source", Value::from("huggingface")),
        ("/status/state", Value::from("downloading")),
        ("/size", Value::from(397808192u64)),
        ("/modelType", Value::from("llm")),
        ("/config/architecture", Value::from("qwen2")),
        ("/config/modelFamily", Value::from("qwen2")),
        ("/config/format", Value::from("gguf")),
        ("/config/contextLength", Value::from(32768)),
        ("/config/quantization", Value::from("Q4_K_M")),
    ] {
        assert_eq!(llm.pointer(pointer), Some(&want), "{pointer}");
    }
    assert!(
        llm.pointer("/config/tokenizer/chatTemplate")
            .is_some_and(Value::is_string)
    );
    let image = serde_json::to_value(image_entry()).unwrap();
    for (pointer, want) in [
        ("/config/baseModel", Value::from("SD 1.5")),
        ("/config/base", Value::from("sd1")),
        ("/config/checkpointType", Value::from("checkpoint")),
        ("/config/triggerWords/0", Value::from("analog style")),
        ("/config/nsfw", Value::from(true)),
        ("/name", Value::from("Realistic Vision V6.0 B1")),
    ] {
        assert_eq!(image.pointer(pointer), Some(&want), "{pointer}");
    }
}
