//! Ingestion of recorded real files: HF configs, diffusers pipelines, and GGUF metadata as llama.cpp
//! writes it. Expected values are read from the fixtures themselves.

use artifacts_contract::{ImageBase, ImageVariant, ModelFamily, WeightFormat};
use catalog::ingest::gguf::{self, GgufValue};
use catalog::ingest::hf_files::{self, FetchedFiles};
use serde_json::Value;

use crate::common::{fixture, fixtures};

fn json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).unwrap()
}

fn files(pairs: &[(&str, &str)]) -> FetchedFiles {
    pairs
        .iter()
        .map(|(name, rel)| (name.to_string(), fixture(rel)))
        .collect()
}

#[test]
fn config_json_names_the_family_and_sizes() {
    let cases = [
        ("gemma2-2b-it-finetune-config.json", ModelFamily::Gemma2),
        ("mistral-7b-instruct-v0.3-config.json", ModelFamily::Mistral),
        ("phi-2-config.json", ModelFamily::Phi),
        ("phi-3-mini-4k-instruct-config.json", ModelFamily::Phi3),
        ("qwen2.5-7b-instruct-config.json", ModelFamily::Qwen2),
        ("mixtral-8x7b-dolphin-2.5-config.json", ModelFamily::Mixtral),
        ("llama-3.2-3b-instruct-config.json", ModelFamily::Llama),
        // Architectures no worker implements keep their name so `compat` can say which.
        ("phi-3.5-moe-instruct-config.json", ModelFamily::Other),
        ("llama-3.1-nemotron-51b-instruct-config.json", ModelFamily::Other),
    ];
    for (file, family) in cases {
        let cfg = json(&format!("hf-config/{file}"));
        let c = hf_files::llm_config_from_config_json(&cfg, WeightFormat::Safetensors);
        assert_eq!(c.model_family, family, "{file}");
        assert_eq!(
            Some(c.architecture.as_str()),
            cfg["architectures"][0].as_str(),
            "{file}"
        );
        assert_eq!(
            c.context_length.map(u64::from),
            cfg["max_position_embeddings"].as_u64(),
            "{file}"
        );
        assert_eq!(
            c.num_kv_heads.map(u64::from),
            cfg["num_key_value_heads"].as_u64(),
            "{file}"
        );
        assert_eq!(c.vocab_size.map(u64::from), cfg["vocab_size"].as_u64(), "{file}");
    }
}

#[test]
fn tokenizer_and_generation_configs_fill_tokens_template_and_sampling() {
    let gemma = hf_files::llm_config_from_files(
        &files(&[
            ("config.json", "hf-config/gemma2-2b-it-finetune-config.json"),
            (
                "tokenizer_config.json",
                "hf-config/gemma2-2b-it-finetune-tokenizer_config.json",
            ),
            (
                "generation_config.json",
                "hf-config/gemma2-2b-it-finetune-generation_config.json",
            ),
        ]),
        WeightFormat::Safetensors,
    )
    .unwrap();
    let tc = json("hf-config/gemma2-2b-it-finetune-tokenizer_config.json");
    let gc = json("hf-config/gemma2-2b-it-finetune-generation_config.json");
    assert_eq!(
        gemma.tokenizer.chat_template.as_deref(),
        tc["chat_template"].as_str()
    );
    assert_eq!(gemma.tokenizer.bos.as_deref(), tc["bos_token"].as_str());
    let eos_ids: Vec<u32> = gc["eos_token_id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(gemma.tokenizer.eos_ids, eos_ids);
    assert_eq!(gemma.quantization.as_deref(), Some("BF16"));

    let mistral = hf_files::llm_config_from_files(
        &files(&[
            ("config.json", "hf-config/mistral-7b-instruct-v0.3-config.json"),
            (
                "tokenizer_config.json",
                "hf-config/mistral-7b-instruct-v0.3-tokenizer_config.json",
            ),
        ]),
        WeightFormat::Safetensors,
    )
    .unwrap();
    assert!(mistral.tokenizer.chat_template.unwrap().contains("[INST]"));

    // A tokenizer config without a template and the template in chat_template.jinja beside it.
    let chatml = json("hf-config/mistralrs-chat_template-chatml.json")["chat_template"]
        .as_str()
        .unwrap()
        .to_string();
    let mut qwen_files = files(&[
        ("config.json", "hf-config/qwen2.5-7b-instruct-config.json"),
        (
            "tokenizer_config.json",
            "hf-config/qwen2.5-instruct-lora-ckpt-tokenizer_config-no-chat_template.json",
        ),
    ]);
    let without = hf_files::llm_config_from_files(&qwen_files, WeightFormat::Safetensors).unwrap();
    assert_eq!(without.tokenizer.chat_template, None);
    assert_eq!(without.tokenizer.eos, vec!["<|im_end|>".to_string()]);
    qwen_files.insert("chat_template.jinja".into(), chatml.clone().into_bytes());
    let with = hf_files::llm_config_from_files(&qwen_files, WeightFormat::Safetensors).unwrap();
    assert_eq!(with.tokenizer.chat_template, Some(chatml));

    let mut bad = FetchedFiles::new();
    bad.insert("config.json".into(), b"{\"architectures\": [".to_vec());
    let err = hf_files::llm_config_from_files(&bad, WeightFormat::Safetensors).unwrap_err();
    assert!(err.to_string().starts_with("malformed config.json"), "{err}");
}

#[test]
fn diffusers_pipelines_give_their_base() {
    let sd15 = hf_files::image_config_from_diffusers(
        &files(&[
            ("model_index.json", "diffusers-config/sd15-model_index.json"),
            ("unet/config.json", "diffusers-config/sd15-unet_config.json"),
            (
                "scheduler/scheduler_config.json",
                "diffusers-config/sd15-scheduler_scheduler_config.json",
            ),
        ]),
        "runwayml/stable-diffusion-v1-5",
    )
    .unwrap();
    assert_eq!((sd15.base, sd15.variant), (ImageBase::Sd1, ImageVariant::Normal));
    let sdxl = hf_files::image_config_from_diffusers(
        &files(&[
            (
                "model_index.json",
                "diffusers-config/sdxl-base-1.0-model_index.json",
            ),
            (
                "unet/config.json",
                "diffusers-config/sdxl-base-1.0-unet_config.json",
            ),
        ]),
        "stabilityai/stable-diffusion-xl-base-1.0",
    )
    .unwrap();
    assert_eq!((sdxl.base, sdxl.variant), (ImageBase::Sdxl, ImageVariant::Normal));
}

/// Rebuilds a GGUF header from ollama's expected-metadata dump (scalars only: arrays are digests there).
fn gguf_from_dump(dump: &serde_json::Map<String, Value>) -> Vec<u8> {
    let arch = dump["general.architecture"].as_str().unwrap().to_string();
    let kvs: Vec<(&str, GgufValue)> = dump
        .iter()
        .filter(|(k, _)| {
            k.starts_with("general.") || k.starts_with("tokenizer.") || k.starts_with(&format!("{arch}."))
        })
        .filter_map(|(k, v)| {
            let s = v.as_str()?;
            let is_digest = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            let value = if is_digest {
                return None;
            } else if let Ok(n) = s.parse::<u64>() {
                GgufValue::Uint(n)
            } else if let Ok(f) = s.parse::<f64>() {
                GgufValue::Float(f)
            } else if s == "true" || s == "false" {
                GgufValue::Bool(s == "true")
            } else {
                GgufValue::String(s.to_string())
            };
            Some((k.as_str(), value))
        })
        .collect();
    gguf::write_header(&kvs, 0)
}

#[test]
fn gguf_metadata_as_llama_cpp_writes_it_maps_to_the_llm_config() {
    let dir = fixtures().join("gguf-meta");
    let mut seen = 0;
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        let dump: serde_json::Map<String, Value> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let header = gguf::parse_header(&gguf_from_dump(&dump)).unwrap();
        let c = header.llm_config();
        let arch = dump["general.architecture"].as_str().unwrap();
        let num = |k: &str| {
            dump.get(&format!("{arch}.{k}"))
                .and_then(|v| v.as_str()?.parse::<u32>().ok())
        };
        let name = path.display().to_string();
        assert_eq!(c.architecture, arch, "{name}");
        assert_ne!(c.model_family, ModelFamily::Other, "{name}");
        assert_eq!(c.context_length, num("context_length"), "{name}");
        assert_eq!(c.num_layers, num("block_count"), "{name}");
        assert_eq!(c.num_kv_heads, num("attention.head_count_kv"), "{name}");
        let file_type: u64 = dump["general.file_type"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            c.quantization.as_deref(),
            gguf::file_type_name(file_type),
            "{name}"
        );
        let eos = dump
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_str()?.parse::<u32>().ok());
        assert_eq!(c.tokenizer.eos_ids, eos.into_iter().collect::<Vec<_>>(), "{name}");
        assert_eq!(
            c.tokenizer.chat_template.as_deref(),
            dump.get("tokenizer.chat_template").and_then(Value::as_str),
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, 5);
}
