//! Rotary embeddings with their long-context scalings, as transformers computes them
//! (`modeling_rope_utils.py`): linear, Llama 3.1's, YaRN and LongRoPE (Phi-3). Both the HuggingFace
//! config reader and the GGUF reader build their [`Rope`] here.

use serde_json::Value;

use crate::cpu::Unsupported;
use crate::cpu::ops::Rope;

/// Base frequencies of `dims` rotated dimensions: `theta^(-2i/dims)`.
fn base(dims: usize, theta: f64) -> Vec<f64> {
    (0..dims / 2)
        .map(|i| theta.powf(-2.0 * i as f64 / dims as f64))
        .collect()
}

/// The rotary embedding a HuggingFace `rope_parameters` (or older `rope_scaling`) object describes;
/// `max_positions` and `original` are the config's `max_position_embeddings` and top-level
/// `original_max_position_embeddings`, `context` the context this worker serves. Unknown kinds are refused.
pub(super) fn from_config(
    dims: usize,
    theta: f64,
    params: Option<&Value>,
    max_positions: Option<f64>,
    original: Option<f64>,
    context: usize,
) -> Result<Rope, Unsupported> {
    let get = |key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_f64);
    let kind = params
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let original = get("original_max_position_embeddings").or(original);
    let factor = get("factor");
    let need = |what: &str| Unsupported::Feature(format!("{kind} rope without `{what}`"));
    Ok(match kind {
        "default" => Rope::new(dims, theta, None),
        "linear" => Rope::new(dims, theta, Some(&vec![factor.unwrap_or(1.0) as f32; dims / 2])),
        "llama3" => {
            let old = original.unwrap_or(8192.0);
            let freqs = llama3(
                dims,
                theta,
                factor.unwrap_or(1.0),
                get("low_freq_factor").unwrap_or(1.0),
                get("high_freq_factor").unwrap_or(4.0),
                old,
            );
            Rope::from_inv_freq(freqs, 1.0)
        }
        "yarn" => {
            let original = original.ok_or_else(|| need("original_max_position_embeddings"))?;
            let factor = factor
                .or(max_positions.map(|m| m / original))
                .ok_or_else(|| need("factor"))?;
            let truncate = params
                .and_then(|p| p.get("truncate"))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let attention =
                get("attention_factor").unwrap_or_else(|| match (get("mscale"), get("mscale_all_dim")) {
                    (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                        yarn_mscale(factor, m) / yarn_mscale(factor, all)
                    }
                    _ => yarn_mscale(factor, 1.0),
                });
            let betas = (
                get("beta_fast").filter(|b| *b != 0.0).unwrap_or(32.0),
                get("beta_slow").filter(|b| *b != 0.0).unwrap_or(1.0),
            );
            yarn(dims, theta, factor, original, betas, truncate, attention)
        }
        "longrope" | "su" => {
            let original = original
                .or(max_positions)
                .ok_or_else(|| need("original_max_position_embeddings"))?;
            let factors = |key: &str| -> Result<Vec<f64>, Unsupported> {
                let list = params
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_array)
                    .ok_or_else(|| need(key))?;
                let values: Vec<f64> = list.iter().filter_map(Value::as_f64).collect();
                match values.len() == dims / 2 {
                    true => Ok(values),
                    false => Err(Unsupported::Feature(format!(
                        "longrope `{key}` has {} factors for {} rotated pairs",
                        values.len(),
                        dims / 2
                    ))),
                }
            };
            let factor = factor.or(max_positions.map(|m| m / original)).unwrap_or(1.0);
            let attention = get("attention_factor").unwrap_or(match factor <= 1.0 {
                true => 1.0,
                false => (1.0 + factor.ln() / original.ln()).sqrt(),
            });
            let chosen = factors(longrope_key(context, original))?;
            Rope::from_inv_freq(longrope(dims, theta, &chosen), attention)
        }
        other => return Err(Unsupported::Feature(format!("rope type {other}"))),
    })
}

/// LongRoPE's choice, made once for the context served (as llama.cpp makes it): the long factors
/// when the context is longer than the one the model was trained on. transformers decides per call
/// by the sequence's length, which agrees for every sequence past `original` tokens.
pub(super) fn longrope_key(context: usize, original: f64) -> &'static str {
    match context as f64 > original {
        true => "long_factor",
        false => "short_factor",
    }
}

/// LongRoPE: each frequency divided by its own factor.
pub(super) fn longrope(dims: usize, theta: f64, factors: &[f64]) -> Vec<f64> {
    base(dims, theta)
        .iter()
        .zip(factors)
        .map(|(f, s)| f / s)
        .collect()
}

/// Llama 3.1's: low frequencies slowed by `factor`, high ones kept, a smooth ramp between (the same
/// numbers llama.cpp's converter writes as `rope_freqs.weight`).
fn llama3(dims: usize, theta: f64, factor: f64, low: f64, high: f64, old: f64) -> Vec<f64> {
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    base(dims, theta)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

/// YaRN's attention factor for a scale.
fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    match scale <= 1.0 {
        true => 1.0,
        false => 0.1 * mscale * scale.ln() + 1.0,
    }
}

/// YaRN's attention factor when the file gives none: `0.1 ln(factor) + 1`.
pub(super) fn yarn_default_attention(factor: f64) -> f64 {
    yarn_mscale(factor, 1.0)
}

/// YaRN: frequencies that turn fewer than `beta_slow` times over the original context are
/// interpolated (divided by `factor`), those turning more than `beta_fast` times kept, a linear ramp
/// between (llama.cpp's ggml computes the same with `truncate`); cos and sin scaled by `attention`.
pub(super) fn yarn(
    dims: usize,
    theta: f64,
    factor: f64,
    original: f64,
    (fast, slow): (f64, f64),
    truncate: bool,
    attention: f64,
) -> Rope {
    Rope::from_inv_freq(
        yarn_freqs(dims, theta, factor, original, fast, slow, truncate),
        attention,
    )
}

fn yarn_freqs(
    dims: usize,
    theta: f64,
    factor: f64,
    original: f64,
    fast: f64,
    slow: f64,
    truncate: bool,
) -> Vec<f64> {
    let d = dims as f64;
    let correction =
        |rotations: f64| d * (original / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln());
    let (mut low, mut high) = (correction(fast), correction(slow));
    if truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
    if low == high {
        high += 0.001;
    }
    base(dims, theta)
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation = 1.0 - ramp;
            f / factor * (1.0 - extrapolation) + f * extrapolation
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_keeps_high_frequencies_and_slows_low_ones() {
        let (dims, theta, factor) = (64, 10_000.0, 4.0);
        let plain = base(dims, theta);
        let scaled = yarn_freqs(dims, theta, factor, 2048.0, 32.0, 1.0, true);
        assert_eq!(scaled[0], plain[0]);
        let last = dims / 2 - 1;
        assert!((scaled[last] - plain[last] / factor).abs() < 1e-15);
        assert!(scaled.iter().zip(&plain).all(|(s, p)| s <= p && *s >= p / factor));
    }

    #[test]
    fn longrope_takes_the_long_factors_past_the_original_context() {
        assert_eq!(longrope_key(131_072, 4096.0), "long_factor");
        assert_eq!(longrope_key(4096, 4096.0), "short_factor");
    }

    #[test]
    fn an_unknown_rope_type_is_refused_by_name() {
        let params = serde_json::json!({"rope_type": "dynamic-ish"});
        let err = from_config(8, 1e4, Some(&params), None, None, 128).err().unwrap();
        assert!(format!("{err:?}").contains("dynamic-ish"));
    }
}
