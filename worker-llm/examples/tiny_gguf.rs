//! Writes the tiny random GGUF models of `tests/fixtures/llm/gguf/` with Candle's GGUF writer: one file per
//! architecture llama.cpp and worker-llm both read (llama, qwen2, qwen3, phi3, gemma3), 2 layers, grouped
//! heads (4 query, 2 key/value), a 300-piece SentencePiece vocabulary, and the GGML types real files mix
//! (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, F16, F32). `scripts/reference/llm_tiny_gguf_llamacpp.py` then
//! records llama.cpp's logits on them, and `tests/tiny_gguf_llamacpp.rs` compares ours.
//!
//! `cargo run -p worker-llm --example tiny_gguf -- tests/fixtures/llm/gguf`

use std::path::Path;

use anyhow::Context;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

const VOCAB: usize = 300;
const WIDTH: usize = 256;
const FFN: usize = 256;
const LAYERS: usize = 2;
const HEAD_DIM: usize = 64;
const KV_ROWS: usize = 2 * HEAD_DIM;

/// What one architecture's file holds beyond the common Llama layout.
struct Arch {
    /// The file's name (without `.gguf`).
    file: &'static str,
    name: &'static str,
    tied: bool,
    qkv_bias: bool,
    qk_norm: bool,
    /// Phi-3: q, k and v in one `attn_qkv`, gate and up in one `ffn_up`.
    fused: bool,
    /// Gemma 3: norms after attention and after the feed-forward, and a sliding window.
    post_norms: bool,
    /// Phi-3's LongRoPE: long and short frequency factors, an original context shorter than the file's,
    /// and an attention factor.
    longrope: bool,
}

const ARCHS: [Arch; 6] = [
    Arch::plain("llama", false),
    Arch {
        qkv_bias: true,
        ..Arch::plain("qwen2", false)
    },
    Arch {
        qk_norm: true,
        ..Arch::plain("qwen3", true)
    },
    Arch {
        fused: true,
        ..Arch::plain("phi3", false)
    },
    Arch {
        qk_norm: true,
        post_norms: true,
        ..Arch::plain("gemma3", true)
    },
    Arch {
        file: "phi3_longrope",
        fused: true,
        longrope: true,
        ..Arch::plain("phi3", false)
    },
];

/// Phi-3 LongRoPE's context before extension: shorter than the prompt and the file's context.
const LONGROPE_ORIGINAL: u32 = 8;

impl Arch {
    const fn plain(name: &'static str, tied: bool) -> Arch {
        Arch {
            file: name,
            name,
            tied,
            qkv_bias: false,
            qk_norm: false,
            fused: false,
            post_norms: false,
            longrope: false,
        }
    }
}

/// Random tensors, reproducible from the seed and the order they are asked for.
struct Weights {
    rng: rand_chacha::ChaCha8Rng,
    tensors: Vec<(String, QTensor)>,
}

impl Weights {
    /// Values uniform in ±1.7·`scale` (around 1 for norms), quantized to `dtype`.
    fn add(&mut self, name: String, shape: &[usize], dtype: GgmlDType, scale: f32) -> anyhow::Result<()> {
        let base = if name.contains("norm") { 1.0 } else { 0.0 };
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| base + scale * self.rng.random_range(-1.7f32..1.7))
            .collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
        self.tensors.push((name, QTensor::quantize(&t, dtype)?));
        Ok(())
    }
}

fn tensors(arch: &Arch) -> anyhow::Result<Vec<(String, QTensor)>> {
    use GgmlDType::*;
    let mut w = Weights {
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(3),
        tensors: Vec::new(),
    };
    w.add("token_embd.weight".into(), &[VOCAB, WIDTH], Q8_0, 1.0)?;
    w.add("output_norm.weight".into(), &[WIDTH], F32, 0.1)?;
    if !arch.tied {
        w.add("output.weight".into(), &[VOCAB, WIDTH], F16, 0.1)?;
    }
    if arch.longrope {
        // Factors 1..~12 over the 32 rotated pairs: the long ones grow faster than the short ones.
        for (name, top) in [
            ("rope_factors_long.weight", 12.0f32),
            ("rope_factors_short.weight", 2.0),
        ] {
            let pairs = HEAD_DIM / 2;
            let data: Vec<f32> = (0..pairs)
                .map(|i| 1.0 + (top - 1.0) * i as f32 / (pairs - 1) as f32)
                .collect();
            let t = Tensor::from_vec(data, pairs, &Device::Cpu)?;
            w.tensors.push((name.into(), QTensor::quantize(&t, F32)?));
        }
    }
    for l in 0..LAYERS {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        w.add(t("attn_norm"), &[WIDTH], F32, 0.1)?;
        w.add(t("ffn_norm"), &[WIDTH], F32, 0.1)?;
        if arch.fused {
            w.add(t("attn_qkv"), &[WIDTH + 2 * KV_ROWS, WIDTH], Q8_0, 0.1)?;
            w.add(t("ffn_up"), &[2 * FFN, WIDTH], Q4K, 0.1)?;
        } else {
            w.add(t("attn_q"), &[WIDTH, WIDTH], Q4_1, 0.1)?;
            w.add(t("attn_k"), &[KV_ROWS, WIDTH], Q4_1, 0.1)?;
            w.add(t("attn_v"), &[KV_ROWS, WIDTH], Q6K, 0.1)?;
            w.add(t("ffn_gate"), &[FFN, WIDTH], Q4K, 0.1)?;
            w.add(t("ffn_up"), &[FFN, WIDTH], Q4K, 0.1)?;
        }
        w.add(t("attn_output"), &[WIDTH, WIDTH], Q4_0, 0.1)?;
        w.add(t("ffn_down"), &[WIDTH, FFN], Q5K, 0.1)?;
        if arch.qkv_bias {
            for (n, rows) in [("attn_q", WIDTH), ("attn_k", KV_ROWS), ("attn_v", KV_ROWS)] {
                w.add(format!("blk.{l}.{n}.bias"), &[rows], F32, 0.5)?;
            }
        }
        if arch.qk_norm {
            w.add(t("attn_q_norm"), &[HEAD_DIM], F32, 0.3)?;
            w.add(t("attn_k_norm"), &[HEAD_DIM], F32, 0.3)?;
        }
        if arch.post_norms {
            w.add(t("post_attention_norm"), &[WIDTH], F32, 0.1)?;
            w.add(t("post_ffw_norm"), &[WIDTH], F32, 0.1)?;
        }
    }
    Ok(w.tensors)
}

/// `<unk>`, `<s>`, `</s>`, the 256 byte pieces, then word pieces: a SentencePiece vocabulary llama.cpp loads.
fn vocabulary() -> Vec<(Value, Value)> {
    let mut pieces: Vec<(String, i32)> = vec![("<unk>".into(), 2), ("<s>".into(), 3), ("</s>".into(), 3)];
    pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
    let words = [
        "▁the", "▁a", "▁of", "▁and", "▁to", "▁in", "▁is", "▁it", "▁on", "▁at",
    ];
    let mut i = 0;
    while pieces.len() < VOCAB {
        pieces.push((format!("{}{}", words[i % words.len()], i / words.len()), 1));
        i += 1;
    }
    pieces
        .into_iter()
        .map(|(text, kind)| (Value::String(text), Value::I32(kind)))
        .collect()
}

fn metadata(arch: &Arch) -> Vec<(String, Value)> {
    let key = |k: &str| format!("{}.{k}", arch.name);
    let vocab = vocabulary();
    // Pieces later in the vocabulary score lower, as SentencePiece orders them.
    let scores = (0..VOCAB).map(|i| Value::F32(-(i as f32))).collect();
    let (tokens, kinds): (Vec<Value>, Vec<Value>) = vocab.into_iter().unzip();
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.name.into()),
        ),
        (
            "general.name".to_string(),
            // Not the architecture's name: llama.cpp keys per-model token attributes on it (Phi-3 needs `<|end|>`).
            Value::String("tiny random".into()),
        ),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("context_length"), Value::U32(64)),
        (key("embedding_length"), Value::U32(WIDTH as u32)),
        (key("feed_forward_length"), Value::U32(FFN as u32)),
        (key("attention.head_count"), Value::U32(4)),
        (key("attention.head_count_kv"), Value::U32(2)),
        (key("attention.key_length"), Value::U32(HEAD_DIM as u32)),
        (key("attention.value_length"), Value::U32(HEAD_DIM as u32)),
        (key("rope.dimension_count"), Value::U32(HEAD_DIM as u32)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        ("tokenizer.ggml.model".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
        ("tokenizer.ggml.scores".to_string(), Value::Array(scores)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(kinds)),
        ("tokenizer.ggml.unknown_token_id".to_string(), Value::U32(0)),
        ("tokenizer.ggml.bos_token_id".to_string(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(2)),
    ];
    if arch.longrope {
        let original = LONGROPE_ORIGINAL as f32;
        let attn_factor = (1.0 + (64.0 / original).ln() / original.ln()).sqrt();
        meta.push((key("rope.scaling.attn_factor"), Value::F32(attn_factor)));
        meta.push((
            key("rope.scaling.original_context_length"),
            Value::U32(LONGROPE_ORIGINAL),
        ));
    }
    if arch.post_norms {
        // Both layers are local (Gemma 3's pattern makes every sixth global), with a window shorter than
        // the test's prompt, so the window is exercised.
        meta.push((key("attention.sliding_window"), Value::U32(4)));
    }
    meta
}

fn write(arch: &Arch, path: &Path) -> anyhow::Result<()> {
    let tensors = tensors(arch)?;
    let meta = metadata(arch);
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let partial = path.with_extension("gguf.partial");
    let mut file = std::fs::File::create(&partial).with_context(|| partial.display().to_string())?;
    gguf_file::write(&mut file, &meta, &tensors)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).context("usage: tiny_gguf DIR")?;
    std::fs::create_dir_all(&dir)?;
    for arch in &ARCHS {
        let path = Path::new(&dir).join(format!("{}.gguf", arch.file));
        write(arch, &path)?;
        println!("{}", path.display());
    }
    Ok(())
}
