//! The Flux transformer (FLUX.1's MMDiT): double-stream blocks, where the text and image tokens keep their
//! own weights but attend jointly, then single-stream blocks over both, each modulated by the timestep,
//! guidance and pooled-text vector. Black Forest Labs' tensor names (`double_blocks.N.img_attn.qkv`...).
//!
//! The same computation as candle-transformers' `flux::model::Flux`, with the steps that dominate a CPU
//! step on worker-sd's kernels: attention flash-style ([`crate::cpu::attention`], no score matrix),
//! LayerNorm fused with its modulation, QK-norm fused with the rotary embedding ([`super::ops`]), and the
//! projections on [`crate::cpu::linear`]: bias written first, GELU and the gated residual adds applied in
//! place to the projection's own buffer, and a single block's output projection reading attention and MLP
//! where they lie (no concatenation). Other devices and dtypes take Candle's ops throughout.

use std::collections::HashMap;

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::Linear;

use super::ops;

/// The shape of a Flux transformer, as [`super::TransformerConfig`] describes it.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Attention heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The rotary split of a head among the ids' axes.
    pub axes_dim: Vec<usize>,
    /// Double-stream blocks.
    pub double: usize,
    /// Single-stream blocks.
    pub single: usize,
    /// Whether the guidance scale is an input.
    pub guidance: bool,
}

/// Named tensors, taken by name.
struct Weights<'a>(&'a HashMap<String, Tensor>);

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("Flux weights lack tensor {name:?}")))
    }

    fn linear(&self, prefix: &str) -> Result<Linear> {
        let bias = self.0.get(&format!("{prefix}.bias")).cloned();
        Ok(Linear::new(self.get(&format!("{prefix}.weight"))?, bias))
    }

    fn mlp(&self, prefix: &str) -> Result<(Linear, Linear)> {
        Ok((
            self.linear(&format!("{prefix}.in_layer"))?,
            self.linear(&format!("{prefix}.out_layer"))?,
        ))
    }
}

/// Applies `linear` to `(b, n, k)` rows (or, on the CPU, to the concatenation of `parts` along the last
/// dimension) as one `(b n, k)` product: worker-sd's [`crate::cpu::linear`] with the bias written first on
/// float32 CPU tensors, Candle's matmul otherwise.
fn project(linear: &Linear, parts: &[&Tensor]) -> Result<Tensor> {
    project_then(linear, parts, After::Nothing)
}

/// What follows a projection, applied in place to its output on the CPU.
enum After<'a> {
    Nothing,
    /// GELU (tanh) of the columns from this one on.
    GeluFrom(usize),
    /// `x + gate * output`: a block's gated residual, `x` `(b, n, w)`, `gate` `(b, 1, w)`.
    GatedResidual(&'a Tensor, &'a Tensor),
}

/// [`project`], then `after`.
fn project_then(linear: &Linear, parts: &[&Tensor], after: After) -> Result<Tensor> {
    let cpu = parts.iter().all(|p| crate::cpu::applies(p)) && crate::cpu::applies(linear.weight());
    if !cpu {
        let x = match parts {
            [x] => (*x).clone(),
            _ => Tensor::cat(parts, D::Minus1)?,
        };
        let (b, n, k) = x.dims3()?;
        let y = linear.forward(&x.reshape((b * n, k))?)?;
        let y = y.reshape((b, n, y.dim(1)?))?;
        return match after {
            After::Nothing => Ok(y),
            After::GeluFrom(c) => {
                let w = y.dim(2)?;
                Tensor::cat(&[y.narrow(2, 0, c)?, ops::gelu(&y.narrow(2, c, w - c)?)?], 2)
            }
            After::GatedResidual(x, gate) => ops::gated_add(x, gate, &y),
        };
    }
    let (n, k) = linear.weight().dims2()?;
    let rows = parts
        .first()
        .map_or(0, |p| p.elem_count() / p.dim(D::Minus1).unwrap_or(1).max(1));
    let label = || format!("flux linear {rows}x{n}x{k}");
    let (w, b) = (linear.weight(), linear.bias());
    let run = || match after {
        After::Nothing => crate::cpu::linear::linear_of_parts(parts, w, b, None),
        After::GeluFrom(c) => {
            let then = |_: usize, row: &mut [f32]| {
                row.iter_mut()
                    .skip(c)
                    .for_each(|v| *v = crate::cpu::math::gelu(*v))
            };
            crate::cpu::linear::linear_then(parts, w, b, None, Some(then))
        }
        After::GatedResidual(x, gate) => {
            let (x, gate) = (x.contiguous()?, gate.contiguous()?);
            let (_, tokens, width) = x.dims3()?;
            if x.elem_count() != rows * n || width != n || gate.elem_count() * tokens != x.elem_count() {
                candle_core::bail!(
                    "flux: residual {:?}, gate {:?} for {rows}x{n}",
                    x.dims(),
                    gate.dims()
                );
            }
            crate::cpu::with_slice(&x, |xs| {
                crate::cpu::with_slice(&gate, |gs| {
                    let then = |r: usize, row: &mut [f32]| {
                        let (x, g) = (&xs[r * n..][..n], &gs[r / tokens * n..][..n]);
                        for ((o, &x), &g) in row.iter_mut().zip(x).zip(g) {
                            *o = x + g * *o;
                        }
                    };
                    crate::cpu::linear::linear_then(parts, w, b, None, Some(then))
                })
            })??
        }
    };
    crate::cpu::profile::time(label, run)
}

/// Runs one of the transformer's other steps under a profile label (`WORKER_SD_PROFILE`).
fn timed<R>(label: &str, f: impl FnOnce() -> R) -> R {
    crate::cpu::profile::time(|| format!("flux {label}"), f)
}

/// `(shift, scale, gate)` chunks of a modulation, each `(b, 1, w)`.
struct Modulation {
    shift: Tensor,
    scale: Tensor,
    gate: Tensor,
}

/// `lin(silu(vec))` cut into `n` modulations.
fn modulations(lin: &Linear, vec: &Tensor, n: usize) -> Result<Vec<Modulation>> {
    let ys = lin.forward(&vec.silu()?)?.unsqueeze(1)?.chunk(3 * n, D::Minus1)?;
    ys.chunks_exact(3)
        .map(|c| {
            Ok(Modulation {
                shift: c[0].contiguous()?,
                scale: c[1].contiguous()?,
                gate: c[2].contiguous()?,
            })
        })
        .collect()
}

/// One stream of a double block: its modulation, attention projections and MLP.
struct Stream {
    modulation: Linear,
    qkv: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    proj: Linear,
    mlp_in: Linear,
    mlp_out: Linear,
}

impl Stream {
    fn new(w: &Weights, prefix: &str) -> Result<Stream> {
        Ok(Stream {
            modulation: w.linear(&format!("{prefix}_mod.lin"))?,
            qkv: w.linear(&format!("{prefix}_attn.qkv"))?,
            q_norm: w.get(&format!("{prefix}_attn.norm.query_norm.scale"))?,
            k_norm: w.get(&format!("{prefix}_attn.norm.key_norm.scale"))?,
            proj: w.linear(&format!("{prefix}_attn.proj"))?,
            mlp_in: w.linear(&format!("{prefix}_mlp.0"))?,
            mlp_out: w.linear(&format!("{prefix}_mlp.2"))?,
        })
    }

    /// The stream after attention: `x + gate1 * proj(attn)`, then the modulated MLP's residual.
    fn finish(&self, x: &Tensor, attn: &Tensor, m: &[Modulation]) -> Result<Tensor> {
        let x = project_then(&self.proj, &[attn], After::GatedResidual(x, &m[0].gate))?;
        let h = timed("norm", || ops::modulated_norm(&x, &m[1].shift, &m[1].scale))?;
        let h = project_then(&self.mlp_in, &[&h], After::GeluFrom(0))?;
        project_then(&self.mlp_out, &[&h], After::GatedResidual(&x, &m[1].gate))
    }
}

struct DoubleBlock {
    img: Stream,
    txt: Stream,
}

struct SingleBlock {
    modulation: Linear,
    linear1: Linear,
    linear2: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
}

/// A Flux transformer on worker-sd's kernels.
pub struct FluxModel {
    shape: Shape,
    img_in: Linear,
    txt_in: Linear,
    time_in: (Linear, Linear),
    vector_in: (Linear, Linear),
    guidance_in: Option<(Linear, Linear)>,
    double: Vec<DoubleBlock>,
    single: Vec<SingleBlock>,
    final_modulation: Linear,
    final_linear: Linear,
}

impl FluxModel {
    /// The model over original-layout tensors (shared, not copied).
    pub fn new(tensors: &HashMap<String, Tensor>, shape: Shape) -> Result<FluxModel> {
        let w = Weights(tensors);
        let double = (0..shape.double)
            .map(|i| {
                Ok(DoubleBlock {
                    img: Stream::new(&w, &format!("double_blocks.{i}.img"))?,
                    txt: Stream::new(&w, &format!("double_blocks.{i}.txt"))?,
                })
            })
            .collect::<Result<_>>()?;
        let single = (0..shape.single)
            .map(|i| {
                let p = format!("single_blocks.{i}");
                Ok(SingleBlock {
                    modulation: w.linear(&format!("{p}.modulation.lin"))?,
                    linear1: w.linear(&format!("{p}.linear1"))?,
                    linear2: w.linear(&format!("{p}.linear2"))?,
                    q_norm: w.get(&format!("{p}.norm.query_norm.scale"))?,
                    k_norm: w.get(&format!("{p}.norm.key_norm.scale"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(FluxModel {
            img_in: w.linear("img_in")?,
            txt_in: w.linear("txt_in")?,
            time_in: w.mlp("time_in")?,
            vector_in: w.mlp("vector_in")?,
            guidance_in: match shape.guidance {
                true => Some(w.mlp("guidance_in")?),
                false => None,
            },
            double,
            single,
            final_modulation: w.linear("final_layer.adaLN_modulation.1")?,
            final_linear: w.linear("final_layer.linear")?,
            shape,
        })
    }

    /// The velocity for packed latents `img` (b, n, c) with ids (b, n, 3), T5 states `txt` (b, m, d) with
    /// ids (b, m, 3), timesteps (b), pooled CLIP `vec` (b, d) and, for guidance-distilled models, the
    /// guidance scale (b).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        img: &Tensor,
        img_ids: &Tensor,
        txt: &Tensor,
        txt_ids: &Tensor,
        timesteps: &Tensor,
        y: &Tensor,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (heads, head_dim) = (self.shape.heads, self.shape.head_dim);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let dtype = img.dtype();
        let (cos, sin) = ops::rope_tables(
            &Tensor::cat(&[txt_ids, img_ids], 1)?,
            &self.shape.axes_dim,
            10_000.0,
        )?;
        let mut txt = project(&self.txt_in, &[txt])?;
        let mut img = project(&self.img_in, &[img])?;
        let embed = |mlp: &(Linear, Linear), t: &Tensor| -> Result<Tensor> {
            mlp.1
                .forward(&mlp.0.forward(&timestep_embedding(t, 256, dtype)?)?.silu()?)
        };
        let mut vec = embed(&self.time_in, timesteps)?;
        if let (Some(g_in), Some(g)) = (&self.guidance_in, guidance) {
            vec = (vec + embed(g_in, g)?)?;
        }
        let vec = (vec + self.vector_in.1.forward(&self.vector_in.0.forward(y)?.silu()?)?)?;
        let n_txt = txt.dim(1)?;

        for block in &self.double {
            let img_m = modulations(&block.img.modulation, &vec, 2)?;
            let txt_m = modulations(&block.txt.modulation, &vec, 2)?;
            let img_h = timed("norm", || {
                ops::modulated_norm(&img, &img_m[0].shift, &img_m[0].scale)
            })?;
            let img_qkv = project(&block.img.qkv, &[&img_h])?;
            let txt_h = timed("norm", || {
                ops::modulated_norm(&txt, &txt_m[0].shift, &txt_m[0].scale)
            })?;
            let txt_qkv = project(&block.txt.qkv, &[&txt_h])?;
            let (q, k, v) = timed("qk-norm rope", || {
                ops::qkv_rope(
                    &[
                        (&txt_qkv, &block.txt.q_norm, &block.txt.k_norm),
                        (&img_qkv, &block.img.q_norm, &block.img.k_norm),
                    ],
                    heads,
                    &cos,
                    &sin,
                )
            })?;
            let attn = attention(&q, &k, &v, heads, scale)?;
            let n_img = attn.dim(1)? - n_txt;
            txt = block.txt.finish(&txt, &attn.narrow(1, 0, n_txt)?, &txt_m)?;
            img = block.img.finish(&img, &attn.narrow(1, n_txt, n_img)?, &img_m)?;
        }

        let mut x = Tensor::cat(&[&txt, &img], 1)?;
        let hidden = heads * head_dim;
        for block in &self.single {
            let m = modulations(&block.modulation, &vec, 1)?;
            let h = timed("norm", || ops::modulated_norm(&x, &m[0].shift, &m[0].scale))?;
            let h = project_then(&block.linear1, &[&h], After::GeluFrom(3 * hidden))?;
            let mlp_width = h.dim(2)? - 3 * hidden;
            let qkv = h.narrow(2, 0, 3 * hidden)?;
            let (q, k, v) = timed("qk-norm rope", || {
                ops::qkv_rope(&[(&qkv, &block.q_norm, &block.k_norm)], heads, &cos, &sin)
            })?;
            let attn = attention(&q, &k, &v, heads, scale)?;
            let mlp = h.narrow(2, 3 * hidden, mlp_width)?;
            x = project_then(
                &block.linear2,
                &[&attn, &mlp],
                After::GatedResidual(&x, &m[0].gate),
            )?;
        }

        let img = x.narrow(1, n_txt, x.dim(1)? - n_txt)?;
        let chunks = self.final_modulation.forward(&vec.silu()?)?.chunk(2, 1)?;
        let (shift, scale) = (
            chunks[0].unsqueeze(1)?.contiguous()?,
            chunks[1].unsqueeze(1)?.contiguous()?,
        );
        project(
            &self.final_linear,
            &[&ops::modulated_norm(&img.contiguous()?, &shift, &scale)?],
        )
    }
}

/// Joint attention over `(b, n, heads * d)` Q, K, V: worker-sd's flash-style kernel on float32 CPU tensors,
/// Candle's ops otherwise.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    if crate::cpu::applies(q) {
        return timed("attention", || {
            crate::cpu::attention::attention(q, k, v, heads, scale)
        });
    }
    let (b, n, w) = q.dims3()?;
    let d = w / heads;
    let split = |x: &Tensor| x.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let weights = candle_nn::ops::softmax_last_dim(&(q.matmul(&k.t()?)? * scale as f64)?)?;
    weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, w))
}

/// Sinusoidal embedding of `t * 1000` (Flux's timestep and guidance), `dim` wide: cosines then sines. The
/// frequencies are computed in float32 in diffusers' order (`exp(-ln(10000) * i / half)`): the embedding
/// feeds an MLP whose output modulates every block, so an ulp here is 1e-4 at the output.
fn timestep_embedding(t: &Tensor, dim: usize, dtype: DType) -> Result<Tensor> {
    let half = dim / 2;
    let device = t.device();
    let log_period = -(10_000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_period * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), device)?;
    let args = (t.to_dtype(DType::F32)? * 1000.0)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)?.to_dtype(dtype)
}
