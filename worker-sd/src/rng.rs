//! Random number generators that draw Gaussian noise exactly as PyTorch does, so a seed gives the image it
//! gives in diffusers, ComfyUI (`torch-cpu`) or AUTOMATIC1111 (`torch-cuda`).
//!
//! `torch-cpu` is `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`: a Mersenne
//! Twister (MT19937) and torch's CPU normal sampling. Tensors of 16 or more float32 elements take torch's
//! vectorized path (all the uniforms first, then Box-Muller on blocks of 16, the last block redrawn when the
//! size is not a multiple of 16); smaller ones draw doubles one pair at a time and keep the second sample for
//! the next call. `torch-cuda` is torch's CUDA Philox4x32-10 generator as AUTOMATIC1111 reproduces it on any
//! device (its "NV" random source): one counter per element, one offset per call.

use std::f64::consts::PI;

/// Which generator makes a request's noise; the name is what the CLI, the API and the PNG parameters use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RngKind {
    /// This worker's own (ChaCha8 and Box-Muller): the same on every platform, unlike any UI's.
    #[default]
    Default,
    /// `torch.randn` with a CPU generator (ComfyUI, diffusers with `torch.Generator("cpu")`).
    TorchCpu,
    /// `torch.randn` on a CUDA device (AUTOMATIC1111's default "GPU" random source).
    TorchCuda,
}

impl RngKind {
    /// Every generator, for error messages.
    pub const ALL: [RngKind; 3] = [RngKind::Default, RngKind::TorchCpu, RngKind::TorchCuda];

    /// The name users write.
    pub fn name(self) -> &'static str {
        match self {
            RngKind::Default => "default",
            RngKind::TorchCpu => "torch-cpu",
            RngKind::TorchCuda => "torch-cuda",
        }
    }

    /// The generator a name selects (`torch-cpu`, `cpu`, `torch-cuda`, `gpu`, `nv`, `default`).
    pub fn parse(name: &str) -> Option<RngKind> {
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "default" | "chacha" => Some(RngKind::Default),
            "torch-cpu" | "cpu" => Some(RngKind::TorchCpu),
            "torch-cuda" | "cuda" | "gpu" | "nv" => Some(RngKind::TorchCuda),
            _ => None,
        }
    }

    /// AUTOMATIC1111's name in the PNG parameters (`RNG: CPU`, `RNG: NV`); `None` for this worker's own.
    pub fn a1111_name(self) -> Option<&'static str> {
        match self {
            RngKind::Default => None,
            RngKind::TorchCpu => Some("CPU"),
            RngKind::TorchCuda => Some("NV"),
        }
    }
}

/// The state size of MT19937.
const MT_N: usize = 624;
/// The middle word of MT19937's recurrence.
const MT_M: usize = 397;

/// torch's CPU generator: MT19937 plus the cached second Box-Muller sample of its double path.
pub struct TorchCpuRng {
    state: [u32; MT_N],
    next: usize,
    left: usize,
    next_normal: Option<f64>,
}

impl TorchCpuRng {
    /// `torch.Generator("cpu").manual_seed(seed)` (torch keeps the low 32 bits for the engine).
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        TorchCpuRng {
            state,
            next: 0,
            left: 1,
            next_normal: None,
        }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Two draws as one 64-bit number, the first in the high half (`random64`).
    fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32();
        let lo = self.next_u32();
        (u64::from(hi) << 32) | u64::from(lo)
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..MT_N {
            let (u, v) = (self.state[i], self.state[(i + 1) % MT_N]);
            let mixed = (u & UPPER) | (v & LOWER);
            let twisted = (mixed >> 1) ^ if v & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + MT_M) % MT_N] ^ twisted;
        }
        self.left = MT_N;
        self.next = 0;
    }

    /// A float32 uniform in [0, 1) from 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A float64 uniform in [0, 1) from 53 random bits.
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `torch.randn(n)` in float32 from this generator.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for value in tail.iter_mut() {
                *value = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }

    /// One sample of torch's scalar `normal_distribution<double>` (the cached sine half first).
    fn normal_f64(&mut self) -> f64 {
        if let Some(sample) = self.next_normal.take() {
            return sample;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * PI * u1;
        self.next_normal = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// torch's `NormalFill16` on 16 uniforms: pairs `(j, j + 8)` become cosine and sine samples.
fn box_muller_16(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        // `2.0f * c10::pi<double> * u2` is computed in double and stored as float.
        let theta = (2.0 * PI * f64::from(u2)) as f32;
        data[j] = radius * theta.cos();
        data[j + 8] = radius * theta.sin();
    }
}

/// torch's CUDA Philox generator as AUTOMATIC1111 emulates it: a seed and an offset that each call advances.
pub struct PhiloxRng {
    seed: u64,
    offset: u32,
}

impl PhiloxRng {
    /// `torch.Generator("cuda").manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        PhiloxRng { seed, offset: 0 }
    }

    /// `torch.randn(n, device="cuda")`: element `i` from the Philox block at counter `(offset, 0, i, 0)`.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(1);
        (0..n)
            .map(|i| {
                let out = philox4x32_10([offset, 0, i as u32, 0], key);
                box_muller_f32(out[0], out[1])
            })
            .collect()
    }
}

/// Ten rounds of Philox4x32 on one counter.
fn philox4x32_10(mut counter: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let p0 = M0 * u64::from(counter[0]);
        let p1 = M1 * u64::from(counter[2]);
        counter = [
            ((p1 >> 32) as u32) ^ counter[1] ^ key[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ counter[3] ^ key[1],
            p0 as u32,
        ];
    }
    counter
}

/// AUTOMATIC1111's Box-Muller on two Philox words (the sine half). Its float32 constants meet uint32
/// words, which NumPy promotes to float64, so the arithmetic is float64 rounded to float32 at the end.
fn box_muller_f32(x: u32, y: u32) -> f32 {
    let inv = 2.328_306_4e-10f32;
    let inv_2pi = (2.328_306_4e-10f64 * 6.283_185_5f64) as f32;
    let u = f64::from(x) * f64::from(inv) + f64::from(inv / 2.0);
    let v = f64::from(y) * f64::from(inv_2pi) + f64::from(inv_2pi / 2.0);
    let s = (-2.0 * u.ln()).sqrt();
    (s * v.sin()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The C++ standard fixes std::mt19937's 10000th output for the default seed 5489.
        let mut rng = TorchCpuRng::new(5489);
        let last = (0..10_000).map(|_| rng.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn rng_names_round_trip() {
        for kind in RngKind::ALL {
            assert_eq!(RngKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(RngKind::parse("GPU"), Some(RngKind::TorchCuda));
        assert_eq!(RngKind::parse("mersenne"), None);
    }
}
