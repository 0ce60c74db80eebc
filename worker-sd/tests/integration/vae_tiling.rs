//! The tiled VAE decode against diffusers' `enable_vae_tiling` on the tiny VAE (recorded by
//! `scripts/reference/sd_vae_tiling.py`: 10x14 latents in 4x5 tiles of 4 latents, blended both ways).

use candle_core::{Device, Tensor};

use crate::common::{assert_close, max_diff, pipeline};

fn reference() -> std::collections::HashMap<String, Tensor> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/sd/vae-tiling/reference.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn tiled_decode_matches_diffusers_tiling_and_its_gap_to_the_whole_decode() {
    let reference = reference();
    let vae = pipeline();
    let vae = vae.vae();
    let latents = &reference["latents"];
    let tiled = vae.decode_tiled(latents, 4).unwrap();
    assert_close(
        "tiled decode vs diffusers' tiled decode",
        &tiled,
        &reference["tiled"],
        1e-4,
    );
    let whole = vae.decode_unscaled(latents).unwrap();
    assert_close("whole decode vs diffusers", &whole, &reference["whole"], 1e-4);
    // Tiling changes the image (GroupNorm sees one tile, seams are blended): by exactly as much as in
    // diffusers, whose own gap on these random weights is large (see reference.json).
    let (ours, theirs) = (
        max_diff(&tiled, &whole),
        max_diff(&reference["tiled"], &reference["whole"]),
    );
    assert!(
        (ours - theirs).abs() < 1e-3,
        "tiled/whole gap {ours} vs diffusers' {theirs}"
    );
}
