//! The key layouts of LoRA files and the weight difference each module adds: kohya (`lora_down`/`lora_up`/
//! `alpha`), diffusers and PEFT (`lora_A`/`lora_B`, or the older `lora.down`/`lora.up`), and LyCORIS
//! (LoCon's convolutions, LoHa's Hadamard product, LoKr's Kronecker product, full `diff`).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};

use crate::error::{Result, SdError};

/// The tensor-name endings of every supported format, longest first where one ends another.
const SUFFIXES: &[&str] = &[
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora.down.weight",
    ".lora.up.weight",
    ".lora_linear_layer.down.weight",
    ".lora_linear_layer.up.weight",
    ".hada_w1_a",
    ".hada_w1_b",
    ".hada_w2_a",
    ".hada_w2_b",
    ".lokr_w1_a",
    ".lokr_w1_b",
    ".lokr_w2_a",
    ".lokr_w2_b",
    ".lokr_w1",
    ".lokr_w2",
    ".diff",
    ".alpha",
];

/// One module's tensors in a LoRA file, by their format-neutral role.
#[derive(Default)]
pub struct ModuleTensors {
    parts: BTreeMap<&'static str, Tensor>,
}

/// The modules of a LoRA file, by the name prefix their tensors share; tensors of no known format are
/// listed apart so a report can name them.
pub struct Modules {
    /// Module name (as the file writes it) to its tensors.
    pub modules: BTreeMap<String, ModuleTensors>,
    /// Tensors this worker does not know how to apply (`lora_mid`, `dora_scale`, bias deltas...).
    pub unknown: Vec<String>,
}

/// Groups a file's tensors by module.
pub fn group(tensors: &HashMap<String, Tensor>) -> Modules {
    let mut modules: BTreeMap<String, ModuleTensors> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, tensor) in tensors {
        match SUFFIXES.iter().find(|s| key.ends_with(*s)) {
            Some(suffix) => {
                let module = key[..key.len() - suffix.len()].to_string();
                let role = role(suffix);
                modules
                    .entry(module)
                    .or_default()
                    .parts
                    .insert(role, tensor.clone());
            }
            None => unknown.push(key.clone()),
        }
    }
    unknown.sort();
    Modules { modules, unknown }
}

/// The format-neutral role of a suffix: `down`/`up` for every low-rank pair.
fn role(suffix: &'static str) -> &'static str {
    match suffix {
        ".lora_down.weight" | ".lora_A.weight" | ".lora.down.weight" | ".lora_linear_layer.down.weight" => {
            "down"
        }
        ".lora_up.weight" | ".lora_B.weight" | ".lora.up.weight" | ".lora_linear_layer.up.weight" => "up",
        other => other.trim_start_matches('.'),
    }
}

impl ModuleTensors {
    /// How many of the file's tensors this module holds.
    pub fn tensor_count(&self) -> usize {
        self.parts.len()
    }

    fn get(&self, role: &str) -> Option<Tensor> {
        self.parts
            .get(role)
            .map(|t| t.to_dtype(DType::F32))
            .transpose()
            .ok()
            .flatten()
    }

    fn alpha(&self) -> Result<Option<f64>> {
        match self.parts.get("alpha") {
            Some(t) => Ok(Some(
                t.to_dtype(DType::F64)?
                    .flatten_all()?
                    .to_vec1::<f64>()?
                    .first()
                    .copied()
                    .unwrap_or(1.0),
            )),
            None => Ok(None),
        }
    }

    /// The weight difference at multiplier 1, shaped like `shape` (the base weight), in f32.
    pub fn delta(&self, module: &str, shape: &[usize]) -> Result<Tensor> {
        let bad = |what: String| SdError::invalid("loras", format!("module {module}: {what}"));
        let alpha = self.alpha()?;
        let delta = if let (Some(up), Some(down)) = (self.get("up"), self.get("down")) {
            let rank = down.dim(0)?;
            let product = flat(&up, up.dim(0)?)?.matmul(&flat(&down, rank)?)?;
            scaled(product, alpha, Some(rank))?
        } else if let (Some(w1a), Some(w1b), Some(w2a), Some(w2b)) = (
            self.get("hada_w1_a"),
            self.get("hada_w1_b"),
            self.get("hada_w2_a"),
            self.get("hada_w2_b"),
        ) {
            let rank = w1b.dim(0)?;
            let w1 = w1a.matmul(&flat(&w1b, rank)?)?;
            let w2 = w2a.matmul(&flat(&w2b, w2b.dim(0)?)?)?;
            scaled((w1 * w2)?, alpha, Some(rank))?
        } else if self.parts.contains_key("lokr_w1") || self.parts.contains_key("lokr_w1_a") {
            let (w1, dim1) = self
                .lokr_factor("lokr_w1")
                .ok_or_else(|| bad("incomplete LoKr w1".into()))?;
            let (w2, dim2) = self
                .lokr_factor("lokr_w2")
                .ok_or_else(|| bad("incomplete LoKr w2".into()))?;
            let (w1, w2) = (w1?, w2?);
            // LyCORIS scales by alpha / rank only when a factor is itself low-rank (w2's rank first).
            let rank = dim2.or(dim1);
            let kron = kron(&w1, &w2, shape)?;
            match rank {
                Some(rank) => scaled(kron, alpha, Some(rank))?,
                None => kron,
            }
        } else if let Some(diff) = self.get("diff") {
            diff
        } else {
            return Err(bad(format!(
                "tensors {:?} are not a complete LoRA, LoHa or LoKr",
                self.parts.keys().collect::<Vec<_>>()
            )));
        };
        if delta.elem_count() != shape.iter().product::<usize>() {
            return Err(bad(format!(
                "its difference has shape {:?} but the model's weight is {shape:?}",
                delta.dims()
            )));
        }
        Ok(delta.reshape(shape)?)
    }

    /// A LoKr factor: the full matrix, or the product of its `_a` and `_b` halves with their rank.
    fn lokr_factor(&self, name: &str) -> Option<(Result<Tensor>, Option<usize>)> {
        if let Some(full) = self.get(name) {
            return Some((Ok(full), None));
        }
        let (a, b) = (self.get(&format!("{name}_a"))?, self.get(&format!("{name}_b"))?);
        let rank = b.dim(0).ok()?;
        let product = (|| -> Result<Tensor> {
            let p = a.matmul(&flat(&b, rank)?)?;
            let mut dims = vec![a.dim(0)?];
            dims.extend_from_slice(&b.dims()[1..]);
            Ok(p.reshape(dims)?)
        })();
        Some((product, Some(rank)))
    }
}

/// `t` as a `(rows, rest)` matrix.
fn flat(t: &Tensor, rows: usize) -> Result<Tensor> {
    Ok(t.reshape((rows, t.elem_count() / rows))?)
}

/// `delta * alpha / rank` (kohya and LyCORIS), or `delta` when the file has no alpha.
fn scaled(delta: Tensor, alpha: Option<f64>, rank: Option<usize>) -> Result<Tensor> {
    Ok(match (alpha, rank) {
        (Some(alpha), Some(rank)) if rank > 0 => (delta * (alpha / rank as f64))?,
        _ => delta,
    })
}

/// The Kronecker product of `w1` `(a, b)` and `w2` `(c, d, ...)`, as `(a*c, b*d, ...)`.
fn kron(w1: &Tensor, w2: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let (a, b) = w1.dims2()?;
    let (c, d) = (w2.dim(0)?, w2.dim(1)?);
    let tail: usize = w2.dims()[2..].iter().product();
    let product = w1
        .reshape((a, 1, b, 1, 1))?
        .broadcast_mul(&w2.reshape((1, c, 1, d, tail))?)?;
    let mut dims = vec![a * c, b * d];
    dims.extend_from_slice(&w2.dims()[2..]);
    let out = product.reshape(dims)?;
    if out.elem_count() == shape.iter().product::<usize>() {
        Ok(out)
    } else {
        Ok(out.flatten_all()?)
    }
}
