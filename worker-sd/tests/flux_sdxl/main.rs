//! worker-sd's Flux and SDXL models against diffusers 0.42.1 on tiny random models recorded by
//! `scripts/reference/sd_flux.py` and `scripts/reference/sd_sdxl.py`; one binary so candle links once.

mod flux;
mod sdxl;

use candle_core::Tensor;

/// The largest absolute difference, after checking the shapes agree.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}
