//! GGUF Llama (Llama 2/3.x, SmolLM, TinyLlama, Mistral 7B).
//!
//! On the CPU it runs on this crate's [`crate::cpu`] blocks (weights kept quantized, an in-place KV
//! cache, SIMD Q4_1), which is what makes it as fast as llama.cpp; on GPUs, or for a GGML type those
//! blocks lack, on `candle_transformers::models::quantized_llama`.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_core::quantized::gguf_file::Content;
use candle_transformers::models::quantized_llama::ModelWeights;

use super::{Adapted, Architecture, CandleModel, CausalLm, LoadContext, Reset};
use crate::cpu::ops::{self, Heads, Rope};
use crate::cpu::{Linear, Matrix, Unsupported, vector};
use crate::error::{LlmError, Result};
use crate::files::{ModelMeta, gguf_u64};

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Llama,
    format: WeightFormat::Gguf,
    names: &["llama", "mistral"],
    load,
};

fn load(ctx: &LoadContext) -> Result<Box<dyn CausalLm>> {
    let (content, mut file) = ctx.gguf()?;
    if ctx.device.is_cpu() {
        if let Ok(model) = CpuLlama::load(&content, &file, ctx.meta.clone())? {
            return Ok(Box::new(model));
        }
    }
    Ok(Adapted::boxed(
        ModelWeights::from_gguf(content, &mut file, ctx.device)?,
        ctx,
    ))
}

impl CandleModel for ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        ModelWeights::forward(self, input, position)
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        self.clear_kv_cache();
        Ok(Reset::Done)
    }
}

/// One transformer block and its slice of the KV cache.
struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V stacked.
    qkv: Linear,
    output: Matrix,
    ffn_norm: Vec<f32>,
    /// Gate and up stacked.
    gate_up: Linear,
    down: Matrix,
    /// One row of `kv_heads * head_dim` per cached position.
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// Llama on the CPU blocks.
struct CpuLlama {
    meta: ModelMeta,
    embedding: Matrix,
    /// `None` when the output projection is tied to the embedding.
    lm_head: Option<Matrix>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    heads: Heads,
    ffn: usize,
    eps: f32,
    rope: Rope,
    /// Positions held in every layer's cache.
    cached: usize,
}

impl CpuLlama {
    /// `Ok(Err(..))` when a tensor's type has no CPU kernel here (the caller uses Candle's model).
    fn load(
        content: &Content,
        file: &std::fs::File,
        meta: ModelMeta,
    ) -> Result<std::result::Result<CpuLlama, Unsupported>> {
        macro_rules! try_load {
            ($e:expr) => {
                match $e? {
                    Ok(v) => v,
                    Err(unsupported) => return Ok(Err(unsupported)),
                }
            };
        }
        let arch = meta.architecture.clone();
        let int = |key: &str| gguf_u64(content, &format!("{arch}.{key}")).map(|v| v as usize);
        let float = |key: &str| {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_f32().ok())
        };
        let missing = |key: &str| LlmError::Config {
            file: "GGUF".into(),
            reason: format!("no `{arch}.{key}` in the metadata"),
        };
        let layers = int("block_count").ok_or_else(|| missing("block_count"))?;
        let width = int("embedding_length").ok_or_else(|| missing("embedding_length"))?;
        let q_heads = int("attention.head_count").ok_or_else(|| missing("attention.head_count"))?;
        let kv_heads = int("attention.head_count_kv").unwrap_or(q_heads);
        let head_dim = int("attention.key_length").unwrap_or(width / q_heads.max(1));
        if q_heads == 0 || kv_heads == 0 || q_heads % kv_heads != 0 || head_dim % 2 != 0 {
            return Err(LlmError::Config {
                file: "GGUF".into(),
                reason: format!("{q_heads} query heads, {kv_heads} key/value heads of {head_dim} dimensions"),
            });
        }
        let rope_dims = int("rope.dimension_count").unwrap_or(head_dim).min(head_dim);
        let theta = float("rope.freq_base").unwrap_or(10_000.0) as f64;
        let factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
            true => Some(try_load!(vector(content, file, "rope_freqs.weight"))),
            false => None,
        };
        let embedding = try_load!(Matrix::load(content, file, &["token_embd.weight"]));
        let lm_head = match content.tensor_infos.contains_key("output.weight") {
            true => Some(try_load!(Matrix::load(content, file, &["output.weight"]))),
            false => None,
        };
        let mut blocks = Vec::with_capacity(layers);
        let mut ffn = 0;
        for l in 0..layers {
            let t = |name: &str| format!("blk.{l}.{name}.weight");
            let (q, k, v) = (t("attn_q"), t("attn_k"), t("attn_v"));
            let (gate, up) = (t("ffn_gate"), t("ffn_up"));
            let gate_up = try_load!(Linear::load(content, file, &[&gate, &up]));
            ffn = gate_up.rows() / 2;
            blocks.push(Layer {
                attn_norm: try_load!(vector(content, file, &t("attn_norm"))),
                qkv: try_load!(Linear::load(content, file, &[&q, &k, &v])),
                output: try_load!(Matrix::load(content, file, &[&t("attn_output")])),
                ffn_norm: try_load!(vector(content, file, &t("ffn_norm"))),
                gate_up,
                down: try_load!(Matrix::load(content, file, &[&t("ffn_down")])),
                keys: Vec::new(),
                values: Vec::new(),
            });
        }
        Ok(Ok(CpuLlama {
            meta,
            embedding,
            lm_head,
            norm: try_load!(vector(content, file, "output_norm.weight")),
            layers: blocks,
            heads: Heads {
                q: q_heads,
                kv: kv_heads,
                dim: head_dim,
            },
            ffn,
            eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope: Rope::new(rope_dims, theta, factors.as_deref()),
            cached: 0,
        }))
    }
}

impl CausalLm for CpuLlama {
    fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>> {
        if position > self.cached {
            return Err(LlmError::InvalidRequest(format!(
                "position {position} is past the {} cached positions",
                self.cached
            )));
        }
        let vocab = self.embedding.rows();
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(LlmError::InvalidRequest(format!(
                "token id {t} is outside the vocabulary of {vocab}"
            )));
        }
        let m = tokens.len();
        if m == 0 {
            return Err(LlmError::EmptyPrompt);
        }
        let Heads { q: nq, kv: nkv, dim } = self.heads;
        let (width, ffn) = (self.embedding.cols(), self.ffn);
        let (q_width, kv_width) = (nq * dim, nkv * dim);
        let qkv_width = q_width + 2 * kv_width;
        let rope_half = self.rope.pairs();

        let mut x = vec![0f32; m * width];
        for (row, &t) in x.chunks_exact_mut(width).zip(tokens) {
            self.embedding.dequantize_row(t as usize, row);
        }
        let (cos, sin) = self.rope.tables(position, m);
        let mut h = vec![0f32; m * width];
        let mut qkv = vec![0f32; m * qkv_width];
        let mut att = vec![0f32; m * q_width];
        let mut proj = vec![0f32; m * width];
        let mut gate_up = vec![0f32; m * 2 * ffn];
        let mut act = vec![0f32; m * ffn];

        for layer in &mut self.layers {
            for (x, h) in x.chunks_exact(width).zip(h.chunks_exact_mut(width)) {
                ops::rms_norm(x, &layer.attn_norm, self.eps, h);
            }
            layer.qkv.matmul(&h, m, &mut qkv);
            layer.keys.truncate(position * kv_width);
            layer.values.truncate(position * kv_width);
            for (i, row) in qkv.chunks_exact_mut(qkv_width).enumerate() {
                let (c, s) = (
                    &cos[i * rope_half..][..rope_half],
                    &sin[i * rope_half..][..rope_half],
                );
                let (q, kv) = row.split_at_mut(q_width);
                rope_heads(q, dim, c, s);
                rope_heads(&mut kv[..kv_width], dim, c, s);
                layer.keys.extend_from_slice(&kv[..kv_width]);
                layer.values.extend_from_slice(&kv[kv_width..]);
            }
            ops::attention(
                &qkv,
                qkv_width,
                m,
                position,
                &layer.keys,
                &layer.values,
                self.heads,
                &mut att,
            );
            layer.output.matmul(&att, m, &mut proj, width);
            add(&mut x, &proj);

            for (x, h) in x.chunks_exact(width).zip(h.chunks_exact_mut(width)) {
                ops::rms_norm(x, &layer.ffn_norm, self.eps, h);
            }
            layer.gate_up.matmul(&h, m, &mut gate_up);
            for (gu, a) in gate_up.chunks_exact_mut(2 * ffn).zip(act.chunks_exact_mut(ffn)) {
                let (g, u) = gu.split_at_mut(ffn);
                ops::silu_mul(g, u);
                a.copy_from_slice(g);
            }
            layer.down.matmul(&act, m, &mut proj, width);
            add(&mut x, &proj);
        }
        self.cached = position + m;

        let last = &x[(m - 1) * width..];
        let mut normed = vec![0f32; width];
        ops::rms_norm(last, &self.norm, self.eps, &mut normed);
        let head = self.lm_head.as_ref().unwrap_or(&self.embedding);
        let mut logits = vec![0f32; head.rows()];
        head.matmul(&normed, 1, &mut logits, head.rows());
        Ok(logits)
    }

    fn reset(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            layer.keys.clear();
            layer.values.clear();
        }
        self.cached = 0;
        Ok(())
    }

    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
}

/// Rotary embedding of every head in `x`, on the first `2 * cos.len()` dimensions of each.
fn rope_heads(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        ops::rope_interleaved(&mut head[..2 * cos.len()], 2 * cos.len(), cos, sin);
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    //! The CPU model against Candle's `quantized_llama` on a random GGUF holding several GGML types
    //! (the first on our kernels and cache, the second on Candle's). Correctness against llama.cpp
    //! itself is `tests/smollm2_llamacpp.rs`; this one covers types and shapes SmolLM2 lacks: K-quants,
    //! F16, grouped heads of 2, an untied output. Both sum the same quantized products in different
    //! orders, so logits of magnitude ~1-5 agree to 2e-3.
    use std::collections::BTreeSet;

    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    use super::*;

    const TOLERANCE: f32 = 2e-3;

    fn random_gguf(path: &std::path::Path, tied: bool) {
        let dev = Device::Cpu;
        let (width, ffn, vocab, layers) = (256usize, 512usize, 300usize, 2usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut tensor = |name: String, shape: &[usize], dtype: GgmlDType, scale: f32| {
            let base = if name.contains("norm") { 1.0 } else { 0.0 };
            let n = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| base + scale * rng.random_range(-1.7f32..1.7))
                .collect();
            let t = Tensor::from_vec(data, shape, &dev).unwrap();
            (name, QTensor::quantize(&t, dtype).unwrap())
        };
        let mut tensors = vec![
            tensor("token_embd.weight".into(), &[vocab, width], GgmlDType::Q8_0, 1.0),
            tensor("output_norm.weight".into(), &[width], GgmlDType::F32, 0.1),
        ];
        if !tied {
            tensors.push(tensor(
                "output.weight".into(),
                &[vocab, width],
                GgmlDType::F16,
                0.1,
            ));
        }
        for l in 0..layers {
            let t = |n: &str| format!("blk.{l}.{n}.weight");
            tensors.extend([
                tensor(t("attn_norm"), &[width], GgmlDType::F32, 0.1),
                tensor(t("ffn_norm"), &[width], GgmlDType::F32, 0.1),
                tensor(t("attn_q"), &[width, width], GgmlDType::Q4_1, 0.1),
                tensor(t("attn_k"), &[128, width], GgmlDType::Q4_1, 0.1),
                tensor(t("attn_v"), &[128, width], GgmlDType::Q6K, 0.1),
                tensor(t("attn_output"), &[width, width], GgmlDType::Q4_0, 0.1),
                tensor(t("ffn_gate"), &[ffn, width], GgmlDType::Q4K, 0.1),
                tensor(t("ffn_up"), &[ffn, width], GgmlDType::Q4K, 0.1),
                tensor(t("ffn_down"), &[width, ffn], GgmlDType::Q5K, 0.1),
            ]);
        }
        use gguf_file::Value;
        let meta = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(layers as u32)),
            ("llama.embedding_length", Value::U32(width as u32)),
            ("llama.feed_forward_length", Value::U32(ffn as u32)),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.rope.dimension_count", Value::U32(64)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ];
        let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut file = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut file, &meta, &tensors).unwrap();
    }

    fn both(path: &std::path::Path) -> (CpuLlama, ModelWeights) {
        let (content, file) = crate::files::open_gguf(path).unwrap();
        let meta = ModelMeta {
            architecture: "llama".into(),
            eos_token_ids: BTreeSet::new(),
            vocab_size: 300,
            context_length: 64,
        };
        let cpu = CpuLlama::load(&content, &file, meta).unwrap().unwrap();
        let (content, mut file) = crate::files::open_gguf(path).unwrap();
        let candle = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
        (cpu, candle)
    }

    fn candle_logits(model: &mut ModelWeights, tokens: &[u32], position: usize) -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        super::super::last_logits(&model.forward(&input, position).unwrap()).unwrap()
    }

    fn assert_close(ours: &[f32], candle: &[f32], what: &str) {
        assert_eq!(ours.len(), candle.len());
        let worst = ours
            .iter()
            .zip(candle)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let size = candle.iter().map(|x| x.abs()).fold(0.0, f32::max);
        assert!(size > 0.1, "{what}: logits are all near zero");
        assert!(
            worst <= TOLERANCE * size.max(1.0),
            "{what}: differs by {worst} (largest logit {size})"
        );
    }

    #[test]
    fn cpu_llama_matches_candles_quantized_llama_on_mixed_ggml_types() {
        let dir = tempfile::tempdir().unwrap();
        for tied in [true, false] {
            let path = dir.path().join(format!("tied-{tied}.gguf"));
            random_gguf(&path, tied);
            let (mut cpu, mut candle) = both(&path);
            let prompt = [1u32, 17, 42, 299, 5, 8];
            assert_close(
                &cpu.forward(&prompt, 0).unwrap(),
                &candle_logits(&mut candle, &prompt, 0),
                "prefill",
            );
            for (step, token) in [7u32, 123, 64].into_iter().enumerate() {
                let position = prompt.len() + step;
                let ours = cpu.forward(&[token], position).unwrap();
                assert_close(&ours, &candle_logits(&mut candle, &[token], position), "decode");
            }
            // A real reset: the same prompt gives the same logits again.
            let first = cpu.forward(&prompt, 0).unwrap();
            cpu.reset().unwrap();
            assert_eq!(cpu.forward(&prompt, 0).unwrap(), first);
            assert!(
                cpu.forward(&[1], 99).is_err(),
                "a position past the cache is refused"
            );
            assert!(
                cpu.forward(&[300], 0).is_err(),
                "a token outside the vocabulary is refused"
            );
        }
    }
}
