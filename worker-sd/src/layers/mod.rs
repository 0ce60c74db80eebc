//! The layers of the SD 1.x/2.x and SDXL UNets and of the SD VAE: candle-transformers' `stable_diffusion`
//! modules (`attention.rs`, `resnet.rs`, `unet_2d_blocks.rs`, `unet_2d.rs`, `vae.rs`, MIT/Apache-2.0,
//! version 0.11.1), with the same tensor names and results, whose convolutions, GroupNorm (+ SiLU) and
//! attention run on worker-sd's CPU kernels ([`crate::cpu`]) for float32 CPU tensors and on Candle's ops
//! everywhere else (CUDA, Metal, float16).

pub mod attention;
pub mod blocks;
pub mod resnet;
pub mod unet_2d;
pub mod unet_blocks;
pub mod vae;
pub mod vae_attention;

use candle_core::{D, Module, Result, Tensor};
use candle_nn as nn;

use crate::cpu;

/// A 2D convolution with bias, from diffusers' `weight` and `bias`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: nn::Conv2d,
    config: nn::Conv2dConfig,
}

/// A convolution of `kernel_size` from `vs`'s `weight` and `bias`, as `candle_nn::conv2d`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    config: nn::Conv2dConfig,
    vs: nn::VarBuilder,
) -> Result<Conv2d> {
    Ok(Conv2d {
        inner: nn::conv2d(in_channels, out_channels, kernel_size, config, vs)?,
        config,
    })
}

/// `l.forward(xs) (+ residual)`: on the CPU one GEMM over every row, bias and residual folded into the
/// output's first write ([`cpu::linear`]).
pub fn linear(l: &nn::Linear, xs: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    if cpu::applies(xs) && cpu::applies(l.weight()) {
        return cpu::profile::time(
            || format!("linear {:?} x {:?}", xs.dims(), l.weight().dims()),
            || cpu::linear::linear(xs, l.weight(), l.bias(), residual),
        );
    }
    let ys = l.forward(xs)?;
    match residual {
        Some(r) => ys + r,
        None => Ok(ys),
    }
}

impl Conv2d {
    /// The weight, `(c_out, c_in, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias, `(c_out)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// `forward(xs)` plus a `(b, c_out)` value per image and channel and a residual of the output's shape,
    /// on the CPU added in the output's first write.
    pub fn forward_add(
        &self,
        xs: &Tensor,
        per_channel: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        if cpu::applies(xs) && c.groups == 1 && c.dilation == 1 {
            let addends = cpu::conv::Addends {
                per_channel,
                residual,
            };
            return cpu::profile::time(
                || format!("conv+add {}", self.label(xs)),
                || cpu::conv::conv2d_add(xs, self.weight(), self.bias(), addends, c.stride, c.padding),
            );
        }
        let mut ys = self.forward(xs)?;
        if let Some(p) = per_channel {
            ys = ys.broadcast_add(&p.unsqueeze(D::Minus1)?.unsqueeze(D::Minus1)?)?;
        }
        match residual {
            Some(r) => ys + r,
            None => Ok(ys),
        }
    }

    /// `forward(upsample_nearest2d(xs, 2 h, 2 w))`, on the CPU without the upsampled input.
    pub fn forward_upsampled(&self, xs: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        if cpu::applies(xs) && c.groups == 1 && c.dilation == 1 && c.stride == 1 {
            return cpu::profile::time(
                || format!("conv up {}", self.label(xs)),
                || cpu::conv::conv2d_upsampled(xs, self.inner.weight(), self.inner.bias(), c.padding),
            );
        }
        let (_, _, h, w) = xs.dims4()?;
        self.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?)
    }
}

impl Conv2d {
    /// The profile label: kernel, stride, channels and input size.
    fn label(&self, xs: &Tensor) -> String {
        let w = self.inner.weight().dims();
        format!(
            "{}x{} s{} {}->{} in {:?}",
            w[2],
            w[3],
            self.config.stride,
            w[1],
            w[0],
            xs.dims()
        )
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        if cpu::applies(xs) && c.groups == 1 && c.dilation == 1 {
            cpu::profile::time(
                || format!("conv {}", self.label(xs)),
                || cpu::conv::conv2d(xs, self.inner.weight(), self.inner.bias(), c.stride, c.padding),
            )
        } else {
            self.inner.forward(xs)
        }
    }
}

/// GroupNorm, and GroupNorm followed by SiLU in one pass.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// GroupNorm of `channels` in `groups` from `vs`'s `weight` and `bias`, as `candle_nn::group_norm`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vs: nn::VarBuilder) -> Result<GroupNorm> {
    let weight = vs.get_with_hints(channels, "weight", nn::Init::Const(1.))?;
    let bias = vs.get_with_hints(channels, "bias", nn::Init::Const(0.))?;
    Ok(GroupNorm {
        inner: nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
        weight,
        bias,
        groups,
        eps,
    })
}

impl GroupNorm {
    /// `silu(group_norm(xs))`: what every resnet and the models' output heads apply.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        if cpu::applies(xs) {
            cpu::profile::time(
                || format!("groupnorm+silu {:?}", xs.dims()),
                || cpu::norm::group_norm(xs, self.groups, self.eps, &self.weight, &self.bias, true),
            )
        } else {
            nn::ops::silu(&self.inner.forward(xs)?)
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if cpu::applies(xs) {
            cpu::profile::time(
                || format!("groupnorm {:?}", xs.dims()),
                || cpu::norm::group_norm(xs, self.groups, self.eps, &self.weight, &self.bias, false),
            )
        } else {
            self.inner.forward(xs)
        }
    }
}
