//! Choosing the next token from logits: penalties, then temperature, top-k, top-p and min-p, then a draw
//! from a seeded generator. One small value per request; it owns its RNG and the counts penalties need.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Resolved sampling settings (request values over model defaults over OpenAI defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingSettings {
    /// 0 means greedy.
    pub temperature: f64,
    /// 1 means off.
    pub top_p: f64,
    /// 0 means off.
    pub top_k: usize,
    /// 0 means off.
    pub min_p: f64,
    /// 1 means off.
    pub repetition_penalty: f32,
    /// 0 means off.
    pub frequency_penalty: f32,
    /// 0 means off.
    pub presence_penalty: f32,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

/// The sampler of one request.
#[derive(Debug)]
pub struct Sampler {
    settings: SamplingSettings,
    rng: ChaCha8Rng,
    /// Tokens of the prompt and output, for the repetition penalty.
    seen: HashSet<u32>,
    /// Occurrences in the output, for frequency and presence penalties.
    counts: HashMap<u32, usize>,
}

impl Sampler {
    /// A sampler seeded with `seed`; `prompt` feeds the repetition penalty.
    pub fn new(settings: SamplingSettings, seed: u64, prompt: &[u32]) -> Self {
        let seen = prompt.iter().copied().collect();
        Sampler {
            settings,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seen,
            counts: HashMap::new(),
        }
    }

    /// Records a generated token, for the penalties of the next steps.
    pub fn accept(&mut self, token: u32) {
        self.seen.insert(token);
        *self.counts.entry(token).or_default() += 1;
    }

    /// Picks the next token; `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_penalties(logits);
        let s = &self.settings;
        if s.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = (1.0 / s.temperature) as f32;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l * inv_t))
            .collect();
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if s.top_k > 0 && s.top_k < cand.len() {
            cand.select_nth_unstable_by(s.top_k - 1, by_logit);
            cand.truncate(s.top_k);
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = cand.iter().map(|c| (c.1 - max).exp()).sum();
        let prob = |c: &(u32, f32)| (c.1 - max).exp() / total;
        let truncating = s.top_p < 1.0 || s.min_p > 0.0;
        // Sorting the whole vocabulary (49152 entries for SmolLM2) for every token of every sequence
        // would cost the engine thread milliseconds per step: only as many of the best as the nucleus
        // and the min-p floor need are sorted, growing until they are enough.
        let keep = match truncating {
            false => cand.len(),
            true => {
                let floor = prob(&(0, max)) as f64 * s.min_p;
                let mut sorted = 64.min(cand.len());
                loop {
                    if sorted < cand.len() {
                        cand.select_nth_unstable_by(sorted - 1, by_logit);
                    }
                    cand[..sorted].sort_unstable_by(by_logit);
                    let mut keep = sorted;
                    let mut acc = 0.0f64;
                    let mut enough = false;
                    for (i, c) in cand[..sorted].iter().enumerate() {
                        let p = prob(c) as f64;
                        if s.min_p > 0.0 && p < floor {
                            keep = i.max(1);
                            enough = true;
                            break;
                        }
                        acc += p;
                        if s.top_p < 1.0 && acc >= s.top_p {
                            keep = i + 1;
                            enough = true;
                            break;
                        }
                    }
                    if enough || sorted == cand.len() {
                        break keep;
                    }
                    sorted = (sorted * 4).min(cand.len());
                }
            }
        };
        let mass: f32 = cand[..keep].iter().map(prob).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for c in &cand[..keep] {
            r -= prob(c);
            if r <= 0.0 {
                return c.0;
            }
        }
        cand[keep - 1].0
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let s = &self.settings;
        if s.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / s.repetition_penalty
                    } else {
                        *l * s.repetition_penalty
                    };
                }
            }
        }
        if s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
            for (&t, &n) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= s.frequency_penalty * n as f32 + s.presence_penalty;
                }
            }
        }
    }
}

/// Index of the largest logit (the first on ties), as greedy decoding and llama.cpp pick it.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(temperature: f64) -> SamplingSettings {
        SamplingSettings {
            temperature,
            ..Default::default()
        }
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(settings(0.0), 1, &[]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0]), 1);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_another_seed_differs() {
        let draw = |seed| {
            let mut s = Sampler::new(settings(1.0), seed, &[]);
            (0..64).map(|_| s.sample(&mut [0.0; 16])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_always_takes_the_best() {
        let mut s = Sampler::new(
            SamplingSettings {
                top_k: 1,
                ..settings(5.0)
            },
            3,
            &[],
        );
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [1.0, 1.5, 0.5]), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities about 0.64, 0.24, 0.09, 0.03: top_p 0.7 keeps the first two.
        let mut s = Sampler::new(
            SamplingSettings {
                top_p: 0.7,
                ..settings(1.0)
            },
            5,
            &[],
        );
        for _ in 0..200 {
            let t = s.sample(&mut [3.0, 2.0, 1.0, 0.0]);
            assert!(t < 2, "{t}");
        }
    }

    #[test]
    fn a_nucleus_wider_than_the_first_sorted_batch_is_found_whole() {
        // 4000 tokens, logits falling slowly: the 0.9 nucleus holds hundreds of tokens, more than the 64
        // sorted first, so the sorted prefix must grow; found by a full sort here.
        let logits: Vec<f32> = (0..4000).map(|i| -(i as f32) / 400.0).collect();
        let probs: Vec<f64> = {
            let total: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
            logits.iter().map(|&l| (l as f64).exp() / total).collect()
        };
        let mut acc = 0.0;
        let nucleus = probs.iter().take_while(|&&p| {
            let inside = acc < 0.9;
            acc += p;
            inside
        });
        let nucleus = nucleus.count();
        assert!(nucleus > 256, "{nucleus}");
        let mut s = Sampler::new(
            SamplingSettings {
                top_p: 0.9,
                ..settings(1.0)
            },
            11,
            &[],
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let t = s.sample(&mut logits.clone());
            assert!(
                (t as usize) < nucleus,
                "token {t} is outside the nucleus of {nucleus}"
            );
            seen.insert(t);
        }
        assert!(seen.len() > 256, "only {} distinct tokens drawn", seen.len());
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // Relative probabilities 1, 0.37, 0.007: min_p 0.1 keeps the first two.
        let mut s = Sampler::new(
            SamplingSettings {
                min_p: 0.1,
                ..settings(1.0)
            },
            9,
            &[],
        );
        let mut seen = [false; 3];
        for _ in 0..300 {
            seen[s.sample(&mut [5.0, 4.0, 0.0]) as usize] = true;
        }
        assert_eq!(seen, [true, true, false]);
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let mut s = Sampler::new(
            SamplingSettings {
                presence_penalty: 2.0,
                ..settings(0.0)
            },
            0,
            &[],
        );
        assert_eq!(s.sample(&mut [1.0, 0.5]), 0);
        s.accept(0);
        assert_eq!(s.sample(&mut [1.0, 0.5]), 1);

        let mut s = Sampler::new(
            SamplingSettings {
                repetition_penalty: 2.0,
                ..settings(0.0)
            },
            0,
            &[0],
        );
        assert_eq!(s.sample(&mut [1.0, 0.6]), 1);

        let mut s = Sampler::new(
            SamplingSettings {
                frequency_penalty: 0.3,
                ..settings(0.0)
            },
            0,
            &[],
        );
        s.accept(0);
        assert_eq!(s.sample(&mut [1.0, 0.6]), 0);
        s.accept(0);
        assert_eq!(s.sample(&mut [1.0, 0.6]), 1);
    }
}
