use super::*;
use rand::{Rng, SeedableRng};

fn random_row(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

#[test]
fn q4_1_kernel_matches_candles_reference_dot() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for n in [64, 576, 1536] {
        let mut w = vec![BlockQ4_1::zeros(); n / 32];
        let mut a = vec![BlockQ8_1::zeros(); n / 32];
        BlockQ4_1::from_float(&random_row(&mut rng, n), &mut w);
        BlockQ8_1::from_float(&random_row(&mut rng, n), &mut a);
        let ours = <BlockQ4_1 as Kernel>::dot(n, &w, &a);
        let candle = BlockQ4_1::vec_dot_unopt(n, &w, &a);
        assert!(
            (ours - candle).abs() <= 1e-4 * candle.abs().max(1.0),
            "n={n}: ours {ours}, candle {candle}"
        );
        // SAFETY: as in `dot`.
        let (w41, a81) = unsafe {
            (
                std::slice::from_raw_parts(w.as_ptr() as *const Q41, w.len()),
                std::slice::from_raw_parts(a.as_ptr() as *const Q81, a.len()),
            )
        };
        let scalar = q4_1_scalar(w41, a81);
        assert!((scalar - candle).abs() <= 1e-4 * candle.abs().max(1.0));
    }
}

#[test]
fn q4_1_rows_kernel_matches_one_row_at_a_time() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let n = 576;
    let mut w = vec![BlockQ4_1::zeros(); n / 32];
    BlockQ4_1::from_float(&random_row(&mut rng, n), &mut w);
    for m in [1, 3, 4, 7, 8] {
        let mut a = vec![BlockQ8_1::zeros(); m * n / 32];
        quantize_q8_1(&random_row(&mut rng, m * n), &mut a);
        let mut rows = vec![0f32; m];
        <BlockQ4_1 as Kernel>::dot_rows(n, &w, &a, &mut rows);
        for (i, (r, a)) in rows.iter().zip(a.chunks_exact(n / 32)).enumerate() {
            let one = <BlockQ4_1 as Kernel>::dot(n, &w, a);
            assert!(
                (r - one).abs() <= 1e-4 * one.abs().max(1.0),
                "m={m}, row {i}: {r} vs {one}"
            );
        }
    }
}

#[test]
fn q8_0_rows_kernel_matches_candles_dot() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let n = 576;
    let mut w = vec![kq::BlockQ8_0::zeros(); n / 32];
    kq::BlockQ8_0::from_float(&random_row(&mut rng, n), &mut w);
    for m in [1, 3, 4, 6, 8] {
        let mut a = vec![kq::BlockQ8_0::zeros(); m * n / 32];
        kq::BlockQ8_0::from_float(&random_row(&mut rng, m * n), &mut a);
        let mut rows = vec![0f32; m];
        <kq::BlockQ8_0 as Kernel>::dot_rows(n, &w, &a, &mut rows);
        for (i, (r, a)) in rows.iter().zip(a.chunks_exact(n / 32)).enumerate() {
            let candle = kq::BlockQ8_0::vec_dot_unopt(n, &w, a);
            assert!(
                (r - candle).abs() <= 1e-4 * candle.abs().max(1.0),
                "m={m}, row {i}: {r} vs {candle}"
            );
        }
    }
}

#[test]
fn q8_1_activations_round_their_sum_once_as_ggml_does() {
    // A block whose quantized sum is past f16's exact integers (2048): ggml's `s` is f16(sum * d).
    let x: Vec<f32> = (0..32).map(|i| 2.0 + 0.01 * i as f32).collect();
    let mut a = vec![BlockQ8_1::zeros(); 1];
    <BlockQ4_1 as Kernel>::quantize_activations(&x, &mut a);
    // SAFETY: as in `dot`.
    let a81 = unsafe { &*(a.as_ptr() as *const Q81) };
    let d = x.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
    let sum: i32 = a81.qs.iter().map(|&q| q as i32).sum();
    assert!(sum > 2048, "the block must test sums f16 cannot hold exactly");
    assert_eq!(a81.s, f16::from_f32(sum as f32 * d));
    assert_eq!(a81.d, f16::from_f32(d));
    // Everything but `s` is Candle's quantization.
    let mut candle = vec![BlockQ8_1::zeros(); 1];
    BlockQ8_1::from_float(&x, &mut candle);
    // SAFETY: as in `dot`.
    let c81 = unsafe { &*(candle.as_ptr() as *const Q81) };
    assert_eq!((a81.d, a81.qs), (c81.d, c81.qs));
}

/// Q4_1 weights and Q8_1 activations (`m` rows) of `n` columns, as ggml quantizes them.
fn q4_1_data(rng: &mut impl Rng, n: usize, m: usize) -> (Vec<BlockQ4_1>, Vec<BlockQ8_1>) {
    let mut w = vec![BlockQ4_1::zeros(); n / 32];
    let mut a = vec![BlockQ8_1::zeros(); m * n / 32];
    BlockQ4_1::from_float(&random_row(rng, n), &mut w);
    quantize_q8_1(&random_row(rng, m * n), &mut a);
    (w, a)
}

/// Q8_0 weights and activations (`m` rows) of `n` columns.
fn q8_0_data(rng: &mut impl Rng, n: usize, m: usize) -> (Vec<kq::BlockQ8_0>, Vec<kq::BlockQ8_0>) {
    let mut w = vec![kq::BlockQ8_0::zeros(); n / 32];
    let mut a = vec![kq::BlockQ8_0::zeros(); m * n / 32];
    kq::BlockQ8_0::from_float(&random_row(rng, n), &mut w);
    kq::BlockQ8_0::from_float(&random_row(rng, m * n), &mut a);
    (w, a)
}

/// The scalar Q4_1 dot (checked against Candle's in `q4_1_kernel_matches_candles_reference_dot`):
/// Candle's own takes only even block counts.
fn q4_1_reference(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY: field-for-field copies (asserted in the module).
    unsafe { q4_1_scalar(view(w), view(a)) }
}

fn close(ours: f32, reference: f32) -> bool {
    (ours - reference).abs() <= 1e-4 * reference.abs().max(1.0)
}

/// Block counts even and odd (the AVX-512 kernels take blocks in pairs), SmolLM2's widths among them.
const WIDTHS: [usize; 6] = [32, 64, 96, 576, 1536, 1568];

/// Every x86-64 kernel against the scalar reference, at each SIMD level this CPU has (not only the one
/// the dispatch picks); the AVX-512 ones equal to the bit to the AVX2 ones (ggml's order of f32 sums),
/// four activation rows against one weight row and four weight rows against one activation row.
#[cfg(target_arch = "x86_64")]
#[test]
fn each_simd_level_matches_the_reference_and_avx512_equals_avx2() {
    let level = detect();
    if level < Simd::Avx2 {
        eprintln!("no AVX2 on this CPU: nothing to test");
        return;
    }
    let avx512 = level == Simd::Avx512Vnni;
    if !avx512 {
        eprintln!("no AVX-512 VNNI on this CPU: its kernels are not tested here");
    }
    let bits = |v: [f32; 4]| v.map(f32::to_bits);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    for n in WIDTHS {
        let b = n / 32;
        let (w, a) = q4_1_data(&mut rng, n, 4);
        let (w4, _) = q4_1_data(&mut rng, 4 * n, 0);
        // SAFETY: field-for-field copies (asserted in the module); the CPU has the features.
        let (w41, a81, w4) = unsafe { (view::<_, Q41>(&w), view::<_, Q81>(&a), view::<_, Q41>(&w4)) };
        let rows: [&[Q81]; 4] = std::array::from_fn(|r| &a81[r * b..(r + 1) * b]);
        let wrows: [&[Q41]; 4] = std::array::from_fn(|r| &w4[r * b..(r + 1) * b]);
        let reference: Vec<f32> = a.chunks_exact(b).map(|a| q4_1_reference(&w, a)).collect();
        // SAFETY: the CPU has AVX2, FMA and F16C.
        let avx2_rows = unsafe { avx2::q4_1_avx2_rows(w41, rows) };
        let avx2_one = rows.map(|r| unsafe { avx2::q4_1_avx2(w41, r) });
        for got in [avx2_rows, avx2_one] {
            for (g, r) in got.iter().zip(&reference) {
                assert!(close(*g, *r), "Q4_1 AVX2, n={n}: {g} vs {r}");
            }
        }
        assert_eq!(bits(avx2_rows), bits(avx2_one), "Q4_1 AVX2 rows, n={n}");
        if avx512 {
            // SAFETY: the CPU has AVX-512 VNNI.
            let batch = unsafe { avx512::q4_1_x4::<true>(b, [w41; 4], rows) };
            assert_eq!(bits(batch), bits(avx2_rows), "Q4_1 AVX-512 batch, n={n}");
            let single = unsafe { avx512::q4_1_x4::<false>(b, wrows, [rows[0]; 4]) };
            let one = wrows.map(|w| unsafe { avx2::q4_1_avx2(w, rows[0]) });
            assert_eq!(bits(single), bits(one), "Q4_1 AVX-512 single, n={n}");
        }

        let (w, a) = q8_0_data(&mut rng, n, 4);
        let (w4, _) = q8_0_data(&mut rng, 4 * n, 0);
        // SAFETY: as above.
        let (w80, a80) = unsafe { (view::<_, Q80>(&w), view::<_, Q80>(&a)) };
        let rows: [&[Q80]; 4] = std::array::from_fn(|r| &a80[r * b..(r + 1) * b]);
        let reference: Vec<f32> = a
            .chunks_exact(b)
            .map(|a| kq::BlockQ8_0::vec_dot_unopt(n, &w, a))
            .collect();
        // SAFETY: the CPU has AVX2, FMA and F16C.
        let avx2_rows = unsafe { avx2::q8_0_avx2_rows(w80, rows) };
        for (g, r) in avx2_rows.iter().zip(&reference) {
            assert!(close(*g, *r), "Q8_0 AVX2, n={n}: {g} vs {r}");
        }
        // Candle's one-row AVX kernel, the single sequence's before the AVX-512 ones.
        let candle = a.chunks_exact(b).map(|a| kq::BlockQ8_0::vec_dot(n, &w, a));
        let candle: Vec<u32> = candle.map(f32::to_bits).collect();
        assert_eq!(bits(avx2_rows).to_vec(), candle, "Q8_0 AVX2 rows, n={n}");
        if avx512 {
            let wrows: [&[kq::BlockQ8_0]; 4] = std::array::from_fn(|r| &w4[r * b..(r + 1) * b]);
            // SAFETY: the CPU has AVX-512 VNNI; field-for-field copies.
            let batch = unsafe { avx512::q8_0_x4::<true>(b, [w80; 4], rows) };
            assert_eq!(bits(batch), bits(avx2_rows), "Q8_0 AVX-512 batch, n={n}");
            let single = unsafe { avx512::q8_0_x4::<false>(b, wrows.map(|w| view(w)), [rows[0]; 4]) };
            let one = wrows.map(|w| kq::BlockQ8_0::vec_dot(n, w, &a[..b]));
            assert_eq!(bits(single), bits(one), "Q8_0 AVX-512 single, n={n}");
        }
    }
}

/// Extreme quants: every nibble 15 against activations of +-127 (the largest u8 x i8 sums the kernels
/// accumulate), and Q8_0's -127 weights (whose absolute value the kernels take).
#[test]
fn extreme_quants_match_the_scalar_reference() {
    let n = 96;
    let mut w = vec![BlockQ4_1::zeros(); n / 32];
    let mut a = vec![BlockQ8_1::zeros(); n / 32];
    let wx: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
    let ax: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { 3.0 } else { -3.0 }).collect();
    BlockQ4_1::from_float(&wx, &mut w);
    quantize_q8_1(&ax, &mut a);
    let ours = <BlockQ4_1 as Kernel>::dot(n, &w, &a);
    let reference = q4_1_reference(&w, &a);
    assert!(close(ours, reference), "Q4_1: {ours} vs {reference}");

    let mut w = vec![kq::BlockQ8_0::zeros(); n / 32];
    let mut a = vec![kq::BlockQ8_0::zeros(); 4 * n / 32];
    let wx: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { -5.0 } else { 5.0 }).collect();
    let ax: Vec<f32> = (0..4 * n).map(|i| if i % 4 < 2 { -1.0 } else { 1.0 }).collect();
    kq::BlockQ8_0::from_float(&wx, &mut w);
    kq::BlockQ8_0::from_float(&ax, &mut a);
    let mut rows = [0f32; 4];
    <kq::BlockQ8_0 as Kernel>::dot_rows(n, &w, &a, &mut rows);
    for (r, a) in rows.iter().zip(a.chunks_exact(n / 32)) {
        let one = <kq::BlockQ8_0 as Kernel>::dot(n, &w, a);
        let candle = kq::BlockQ8_0::vec_dot_unopt(n, &w, a);
        assert!(
            close(*r, candle) && close(one, candle),
            "Q8_0: {r}, {one} vs {candle}"
        );
    }
}

/// A single sequence's product, several weight rows against one activation row (four at a time,
/// then the rest), against the one-row dot, for each row count past a multiple of four.
#[test]
fn dot_many_matches_one_row_at_a_time() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    for n in [96, 576] {
        let b = n / 32;
        for rows in [1, 3, 4, 5, 9] {
            let (_, a) = q4_1_data(&mut rng, n, 1);
            let mut w = vec![BlockQ4_1::zeros(); rows * b];
            BlockQ4_1::from_float(&random_row(&mut rng, rows * n), &mut w);
            let mut out = vec![0f32; rows];
            <BlockQ4_1 as Kernel>::dot_many(n, &w, &a, &mut out);
            for (o, w) in out.iter().zip(w.chunks_exact(b)) {
                let reference = q4_1_reference(w, &a);
                assert!(close(*o, reference), "Q4_1 n={n} rows={rows}: {o} vs {reference}");
            }

            let (_, a) = q8_0_data(&mut rng, n, 1);
            let mut w = vec![kq::BlockQ8_0::zeros(); rows * b];
            kq::BlockQ8_0::from_float(&random_row(&mut rng, rows * n), &mut w);
            <kq::BlockQ8_0 as Kernel>::dot_many(n, &w, &a, &mut out);
            for (o, w) in out.iter().zip(w.chunks_exact(b)) {
                let candle = kq::BlockQ8_0::vec_dot_unopt(n, w, &a);
                assert!(close(*o, candle), "Q8_0 n={n} rows={rows}: {o} vs {candle}");
            }
        }
    }
}

/// A batch's rows packed eight by eight, each group against one weight row, equal to the bit to the
/// one-row kernels (the single sequence's): for every group size (odd ones padded) and several groups.
#[test]
fn packed_batch_kernels_equal_the_one_row_kernels_to_the_bit() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    let mut checked = 0;
    for n in WIDTHS {
        let b = n / 32;
        for m in [1, 2, 3, 5, 7, 8, 9, 16, 19] {
            let (w, a) = q4_1_data(&mut rng, n, m);
            if let Some(packed) = <BlockQ4_1 as Kernel>::pack(n, &a) {
                assert_eq!(packed.groups(), m.div_ceil(8));
                for g in 0..packed.groups() {
                    let mut out = [f32::NAN; 8];
                    <BlockQ4_1 as Kernel>::dot_packed(&w, &packed, g, &mut out);
                    for (i, o) in packed.group_rows(g).zip(out) {
                        let one = <BlockQ4_1 as Kernel>::dot(n, &w, &a[i * b..(i + 1) * b]);
                        assert_eq!(
                            o.to_bits(),
                            one.to_bits(),
                            "Q4_1 n={n} m={m} row {i}: {o} vs {one}"
                        );
                        assert!(close(o, q4_1_reference(&w, &a[i * b..(i + 1) * b])));
                    }
                }
                checked += 1;
            }

            let (w, a) = q8_0_data(&mut rng, n, m);
            if let Some(packed) = <kq::BlockQ8_0 as Kernel>::pack(n, &a) {
                for g in 0..packed.groups() {
                    let mut out = [f32::NAN; 8];
                    <kq::BlockQ8_0 as Kernel>::dot_packed(&w, &packed, g, &mut out);
                    for (i, o) in packed.group_rows(g).zip(out) {
                        let one = <kq::BlockQ8_0 as Kernel>::dot(n, &w, &a[i * b..(i + 1) * b]);
                        assert_eq!(
                            o.to_bits(),
                            one.to_bits(),
                            "Q8_0 n={n} m={m} row {i}: {o} vs {one}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    if checked == 0 {
        eprintln!("no packed kernels on this CPU: nothing to test");
    }
}

/// The AVX-512 Q8_1 quantizer equals the scalar one to the bit, ties (x.5 after scaling) included.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_q8_1_quantizer_equals_the_scalar_one() {
    if detect() != Simd::Avx512Vnni {
        eprintln!("no AVX-512 on this CPU: nothing to test");
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let mut x = random_row(&mut rng, 1536);
    // A block whose maximum is 127 (scale 1): halves round away from zero; a block of zeros.
    for (i, v) in x[..32].iter_mut().enumerate() {
        *v = if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 };
    }
    x[32..64].fill(0.0);
    x[64] = -0.49999997;
    let blocks = x.len() / 32;
    let mut scalar = vec![BlockQ8_1::zeros(); blocks];
    let mut simd = vec![BlockQ8_1::zeros(); blocks];
    // SAFETY: field-for-field copies (asserted in the module); the CPU has AVX-512.
    unsafe {
        let view_mut =
            |b: &mut [BlockQ8_1]| std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut Q81, b.len());
        quantize_q8_1_scalar(&x, view_mut(&mut scalar));
        avx512::quantize_q8_1(&x, view_mut(&mut simd));
        for (j, (s, v)) in view::<_, Q81>(&scalar)
            .iter()
            .zip(view::<_, Q81>(&simd))
            .enumerate()
        {
            assert_eq!(
                (s.qs, s.d.to_bits(), s.s.to_bits()),
                (v.qs, v.d.to_bits(), v.s.to_bits()),
                "block {j}"
            );
        }
        assert_eq!(
            view::<_, Q81>(&scalar)[0].qs[1],
            -15,
            "-14.5 rounds away from zero"
        );
    }
}
