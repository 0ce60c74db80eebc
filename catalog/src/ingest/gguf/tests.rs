use super::*;

fn sample() -> Vec<u8> {
    let tokens = ["<unk>", "<s>", "</s>", "hi"]
        .iter()
        .map(|t| GgufValue::String(t.to_string()))
        .collect();
    write_header(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("general.name", GgufValue::String("Tiny".into())),
            ("general.file_type", GgufValue::Uint(15)),
            ("llama.context_length", GgufValue::Uint(4096)),
            ("llama.block_count", GgufValue::Uint(2)),
            ("llama.embedding_length", GgufValue::Uint(64)),
            ("llama.attention.head_count", GgufValue::Uint(4)),
            ("llama.attention.head_count_kv", GgufValue::Uint(2)),
            ("tokenizer.ggml.tokens", GgufValue::Array(tokens)),
            ("tokenizer.ggml.bos_token_id", GgufValue::Uint(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::Uint(2)),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
            (
                "tokenizer.chat_template",
                GgufValue::String("{{ messages }}".into()),
            ),
        ],
        0,
    )
}

#[test]
fn reads_llm_config_from_metadata() {
    let header = parse_header(&sample()).unwrap();
    let c = header.llm_config();
    assert_eq!(c.model_family, ModelFamily::Llama);
    assert_eq!(c.quantization.as_deref(), Some("Q4_K_M"));
    assert_eq!(c.context_length, Some(4096));
    assert_eq!(c.num_kv_heads, Some(2));
    assert_eq!(c.vocab_size, Some(4));
    assert_eq!(c.tokenizer.bos.as_deref(), Some("<s>"));
    assert_eq!(c.tokenizer.eos, vec!["</s>".to_string()]);
    assert_eq!(c.tokenizer.add_bos_token, Some(true));
    assert_eq!(c.tokenizer.chat_template.as_deref(), Some("{{ messages }}"));
}

#[test]
fn every_truncation_says_how_many_bytes_are_needed() {
    let bytes = sample();
    for cut in 0..bytes.len() {
        match parse_header(&bytes[..cut]) {
            Err(GgufError::Truncated { needed, have }) => {
                assert_eq!(have, cut as u64);
                assert!(
                    needed > have && needed <= bytes.len() as u64,
                    "cut {cut}: {needed}"
                );
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    assert!(parse_header(&bytes).is_ok());
}

#[test]
fn refuses_absurd_lengths_before_reading_them() {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(12u64 << 30).to_le_bytes());
    let err = parse_header(&bytes).unwrap_err();
    assert!(err.to_string().contains("claims 12.0 GB of metadata"), "{err}");
}

#[test]
fn refuses_other_magic_and_versions() {
    assert_eq!(parse_header(b"PK\x03\x04xxxxxxxx"), Err(GgufError::BadMagic));
    let mut v1 = b"GGUF".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(parse_header(&v1), Err(GgufError::Version(1)));
}
