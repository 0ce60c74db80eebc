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

    /// The weight difference at multiplier 1, shaped like `shape` (the base weight), in f32. Tensors that
    /// do not combine into that shape are the caller's error (400), naming the module and every shape.
    pub fn delta(&self, module: &str, shape: &[usize]) -> Result<Tensor> {
        let alpha = self.alpha()?;
        self.checked(module, shape, alpha, &|t| Ok(t.to_dtype(DType::F32)?))
    }

    /// What [`ModuleTensors::delta`] would refuse, from the tensors' shapes alone (no arithmetic): how a
    /// server refuses a bad LoRA before it queues the request.
    pub fn check(&self, module: &str, shape: &[usize]) -> Result<()> {
        self.checked(module, shape, None, &|t| Ok(Shape(t.dims().to_vec())))
            .map(|_| ())
    }

    fn checked<A: Algebra>(
        &self,
        module: &str,
        shape: &[usize],
        alpha: Option<f64>,
        lift: &dyn Fn(&Tensor) -> Result<A>,
    ) -> Result<A> {
        let mismatch = |detail: String| {
            let shapes: Vec<String> = self
                .parts
                .iter()
                .map(|(role, t)| format!("{role} {:?}", t.dims()))
                .collect();
            SdError::invalid(
                "loras",
                format!(
                    "module {module}: its tensors ({}) do not make the model's weight of shape {shape:?}{detail}",
                    shapes.join(", ")
                ),
            )
        };
        match self.combine(module, shape, alpha, lift) {
            Ok(delta) if delta.dims() == shape => Ok(delta),
            Ok(delta) => Err(mismatch(format!(" (they make {:?})", delta.dims()))),
            // Tensor errors here are shapes that do not multiply: the file's fault, not the worker's.
            Err(SdError::Tensor(e)) => Err(mismatch(format!(": {e}"))),
            Err(e) => Err(e),
        }
    }

    /// The difference as the format defines it, reshaped to `shape` when it has its first dimension and
    /// element count (a convolution's `(out, in·k·k)` product).
    fn combine<A: Algebra>(
        &self,
        module: &str,
        shape: &[usize],
        alpha: Option<f64>,
        lift: &dyn Fn(&Tensor) -> Result<A>,
    ) -> Result<A> {
        let bad = |what: String| SdError::invalid("loras", format!("module {module}: {what}"));
        let get = |role: &str| self.parts.get(role).map(lift).transpose();
        let delta = if let (Some(up), Some(down)) = (get("up")?, get("down")?) {
            let rank = lead(&down);
            let product = flat(&up, lead(&up))?.matmul(&flat(&down, rank)?)?;
            scaled(product, alpha, Some(rank))?
        } else if let (Some(w1a), Some(w1b), Some(w2a), Some(w2b)) = (
            get("hada_w1_a")?,
            get("hada_w1_b")?,
            get("hada_w2_a")?,
            get("hada_w2_b")?,
        ) {
            let rank = lead(&w1b);
            let w1 = w1a.matmul(&flat(&w1b, rank)?)?;
            let w2 = w2a.matmul(&flat(&w2b, lead(&w2b))?)?;
            scaled(w1.hadamard(&w2)?, alpha, Some(rank))?
        } else if self.parts.contains_key("lokr_w1") || self.parts.contains_key("lokr_w1_a") {
            let (w1, dim1) = lokr_factor(&get, "lokr_w1")?.ok_or_else(|| bad("incomplete LoKr w1".into()))?;
            let (w2, dim2) = lokr_factor(&get, "lokr_w2")?.ok_or_else(|| bad("incomplete LoKr w2".into()))?;
            // LyCORIS scales by alpha / rank only when a factor is itself low-rank (w2's rank first).
            let rank = dim2.or(dim1);
            let kron = w1.kron(&w2)?;
            match rank {
                Some(rank) => scaled(kron, alpha, Some(rank))?,
                None => kron,
            }
        } else if let Some(diff) = get("diff")? {
            diff
        } else {
            return Err(bad(format!(
                "tensors {:?} are not a complete LoRA, LoHa or LoKr",
                self.parts.keys().collect::<Vec<_>>()
            )));
        };
        let count = |d: &[usize]| d.iter().product::<usize>();
        let fits = count(delta.dims()) == count(shape) && delta.dims().first() == shape.first();
        Ok(if fits {
            delta.reshape(shape.to_vec())?
        } else {
            delta
        })
    }
}

/// A LoKr factor: the full matrix, or the product of its `_a` and `_b` halves with their rank.
fn lokr_factor<A: Algebra>(
    get: &dyn Fn(&str) -> Result<Option<A>>,
    name: &str,
) -> Result<Option<(A, Option<usize>)>> {
    if let Some(full) = get(name)? {
        return Ok(Some((full, None)));
    }
    let (Some(a), Some(b)) = (get(&format!("{name}_a"))?, get(&format!("{name}_b"))?) else {
        return Ok(None);
    };
    let rank = lead(&b);
    let mut dims = vec![lead(&a)];
    dims.extend_from_slice(b.dims().get(1..).unwrap_or_default());
    Ok(Some((a.matmul(&flat(&b, rank)?)?.reshape(dims)?, Some(rank))))
}

/// What [`ModuleTensors`] computes with: the tensors (the difference), or their shapes alone (a check).
trait Algebra: Sized {
    fn dims(&self) -> &[usize];
    fn reshape(&self, dims: Vec<usize>) -> Result<Self>;
    fn matmul(&self, rhs: &Self) -> Result<Self>;
    fn hadamard(&self, rhs: &Self) -> Result<Self>;
    /// The Kronecker product of `(a, b)` and `(c, d, ...)`, as `(a*c, b*d, ...)`.
    fn kron(&self, rhs: &Self) -> Result<Self>;
    fn scale(self, by: f64) -> Result<Self>;
}

impl Algebra for Tensor {
    fn dims(&self) -> &[usize] {
        Tensor::dims(self)
    }
    fn reshape(&self, dims: Vec<usize>) -> Result<Self> {
        Ok(Tensor::reshape(self, dims)?)
    }
    fn matmul(&self, rhs: &Self) -> Result<Self> {
        Ok(Tensor::matmul(self, rhs)?)
    }
    fn hadamard(&self, rhs: &Self) -> Result<Self> {
        Ok(self.mul(rhs)?)
    }
    fn kron(&self, w2: &Self) -> Result<Self> {
        let (a, b) = self.dims2()?;
        let (c, d) = (w2.dim(0)?, w2.dim(1)?);
        let tail: usize = w2.dims()[2..].iter().product();
        let product = self
            .reshape((a, 1, b, 1, 1))?
            .broadcast_mul(&w2.reshape((1, c, 1, d, tail))?)?;
        let mut dims = vec![a * c, b * d];
        dims.extend_from_slice(&w2.dims()[2..]);
        Ok(product.reshape(dims)?)
    }
    fn scale(self, by: f64) -> Result<Self> {
        Ok((self * by)?)
    }
}

/// A tensor's shape, for [`ModuleTensors::check`].
struct Shape(Vec<usize>);

fn shape_error(what: String) -> SdError {
    SdError::Tensor(candle_core::Error::Msg(what))
}

impl Algebra for Shape {
    fn dims(&self) -> &[usize] {
        &self.0
    }
    fn reshape(&self, dims: Vec<usize>) -> Result<Self> {
        if dims.iter().product::<usize>() == self.0.iter().product::<usize>() {
            Ok(Shape(dims))
        } else {
            Err(shape_error(format!("cannot reshape {:?} to {dims:?}", self.0)))
        }
    }
    fn matmul(&self, rhs: &Self) -> Result<Self> {
        match (self.0.as_slice(), rhs.0.as_slice()) {
            ([m, k], [k2, n]) if k == k2 => Ok(Shape(vec![*m, *n])),
            (a, b) => Err(shape_error(format!("cannot multiply {a:?} by {b:?}"))),
        }
    }
    fn hadamard(&self, rhs: &Self) -> Result<Self> {
        if self.0 == rhs.0 {
            Ok(Shape(self.0.clone()))
        } else {
            Err(shape_error(format!("{:?} and {:?} differ", self.0, rhs.0)))
        }
    }
    fn kron(&self, rhs: &Self) -> Result<Self> {
        match (self.0.as_slice(), rhs.0.as_slice()) {
            ([a, b], [c, d, tail @ ..]) => {
                let mut dims = vec![a * c, b * d];
                dims.extend_from_slice(tail);
                Ok(Shape(dims))
            }
            (a, b) => Err(shape_error(format!("no Kronecker product of {a:?} and {b:?}"))),
        }
    }
    fn scale(self, _: f64) -> Result<Self> {
        Ok(self)
    }
}

/// The first dimension (0 for a scalar, which `flat` then refuses).
fn lead<A: Algebra>(t: &A) -> usize {
    t.dims().first().copied().unwrap_or(0)
}

/// `t` as a `(rows, rest)` matrix.
fn flat<A: Algebra>(t: &A, rows: usize) -> Result<A> {
    let count: usize = t.dims().iter().product();
    if rows == 0 || !count.is_multiple_of(rows) {
        return Err(shape_error(format!("{:?} has no {rows} rows", t.dims())));
    }
    t.reshape(vec![rows, count / rows])
}

/// `delta * alpha / rank` (kohya and LyCORIS), or `delta` when the file has no alpha.
fn scaled<A: Algebra>(delta: A, alpha: Option<f64>, rank: Option<usize>) -> Result<A> {
    match (alpha, rank) {
        (Some(alpha), Some(rank)) if rank > 0 => delta.scale(alpha / rank as f64),
        _ => Ok(delta),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// A tensor-name suffix and its shape.
    type Part<'a> = (&'a str, &'a [usize]);

    fn module(parts: &[Part]) -> ModuleTensors {
        let tensors: HashMap<String, Tensor> = parts
            .iter()
            .map(|(k, dims)| {
                let t = Tensor::ones(dims.to_vec(), DType::F32, &Device::Cpu).unwrap();
                (format!("m{k}"), t)
            })
            .collect();
        group(&tensors).modules.remove("m").unwrap()
    }

    #[test]
    fn the_shape_check_refuses_what_the_merge_refuses_and_never_panics() {
        let cases: &[(&[Part], bool)] = &[
            (
                &[(".lora_down.weight", &[4, 8]), (".lora_up.weight", &[6, 4])],
                true,
            ),
            (
                &[
                    (".lora_down.weight", &[4, 8, 3, 3]),
                    (".lora_up.weight", &[6, 4, 1, 1]),
                ],
                false,
            ),
            (
                &[(".lora_down.weight", &[4, 8]), (".lora_up.weight", &[6, 2])],
                false,
            ),
            (
                &[(".lora_down.weight", &[0, 8]), (".lora_up.weight", &[6, 0])],
                false,
            ),
            (&[(".lora_down.weight", &[]), (".lora_up.weight", &[6, 4])], false),
            (
                &[
                    (".hada_w1_a", &[6, 2]),
                    (".hada_w1_b", &[2, 8]),
                    (".hada_w2_a", &[6, 2]),
                    (".hada_w2_b", &[2, 7]),
                ],
                false,
            ),
            (
                &[
                    (".lokr_w1", &[2, 2]),
                    (".lokr_w2_a", &[3, 1]),
                    (".lokr_w2_b", &[1, 4]),
                ],
                true,
            ),
            (&[(".lokr_w1", &[2, 2]), (".lokr_w2", &[3, 5])], false),
            (&[(".diff", &[6, 8])], true),
            (&[(".diff", &[8, 6])], false),
        ];
        for (parts, ok) in cases {
            let m = module(parts);
            let checked = m.check("m", &[6, 8]);
            let merged = m.delta("m", &[6, 8]);
            assert_eq!(checked.is_ok(), *ok, "{parts:?}: {checked:?}");
            assert_eq!(merged.is_ok(), *ok, "{parts:?}: {merged:?}");
            if let Err(e) = merged {
                assert!(e.is_bad_request() && e.to_string().contains("module m"), "{e}");
            }
        }
    }
}
