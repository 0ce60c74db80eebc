//! Whether an adapter (a LoRA or LyCORIS, a textual-inversion embedding) fits a model, so the catalog, the
//! web UI and the image worker refuse an SDXL LoRA on SD 1.5 with the same reason.

use crate::config::{CheckpointType, ImageBase, ImageConfig};

/// Why an adapter cannot be applied to a model; each says which base or type was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterIncompatibility {
    /// The entry is a checkpoint, a VAE or anything else that is not applied on top of a model.
    #[error("{name} is a {actual}, not a {expected}")]
    NotAnAdapter {
        /// The adapter's name.
        name: String,
        /// What the entry is.
        actual: CheckpointType,
        /// What was asked for (`lora`, `embedding`).
        expected: CheckpointType,
    },
    /// The adapter was trained on another base.
    #[error("{name} is a {adapter} {kind} and cannot be applied to a {model} model")]
    Base {
        /// The adapter's name.
        name: String,
        /// What kind of adapter it is.
        kind: CheckpointType,
        /// The adapter's base.
        adapter: ImageBase,
        /// The model's base.
        model: ImageBase,
    },
}

/// Checks that an adapter of kind `kind` trained on `adapter` applies to a `model` model. An unknown
/// adapter base (`Other`) passes: the weights' names decide then.
pub fn check_adapter_base(
    name: &str,
    kind: CheckpointType,
    adapter: ImageBase,
    model: ImageBase,
) -> Result<(), AdapterIncompatibility> {
    if adapter == ImageBase::Other || adapter == model {
        return Ok(());
    }
    Err(AdapterIncompatibility::Base {
        name: name.to_string(),
        kind,
        adapter,
        model,
    })
}

/// Checks a catalog entry's image config as an adapter of kind `expected` for a `model` model.
pub fn check_adapter(
    name: &str,
    config: &ImageConfig,
    expected: CheckpointType,
    model: ImageBase,
) -> Result<(), AdapterIncompatibility> {
    if config.checkpoint_type != expected {
        return Err(AdapterIncompatibility::NotAnAdapter {
            name: name.to_string(),
            actual: config.checkpoint_type,
            expected,
        });
    }
    check_adapter_base(name, expected, config.base, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: CheckpointType, base: ImageBase) -> ImageConfig {
        ImageConfig {
            checkpoint_type: kind,
            ..ImageConfig::new(base)
        }
    }

    #[test]
    fn an_sdxl_lora_is_refused_on_sd15_with_the_reason() {
        let err = check_adapter(
            "detail",
            &config(CheckpointType::Lora, ImageBase::Sdxl),
            CheckpointType::Lora,
            ImageBase::Sd1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "detail is a sdxl lora and cannot be applied to a sd1 model"
        );
        assert!(
            check_adapter(
                "detail",
                &config(CheckpointType::Lora, ImageBase::Sd1),
                CheckpointType::Lora,
                ImageBase::Sd1
            )
            .is_ok()
        );
    }

    #[test]
    fn a_checkpoint_is_not_a_lora_and_an_unknown_base_passes() {
        let err = check_adapter(
            "model",
            &config(CheckpointType::Checkpoint, ImageBase::Sd1),
            CheckpointType::Lora,
            ImageBase::Sd1,
        )
        .unwrap_err();
        assert!(
            matches!(err, AdapterIncompatibility::NotAnAdapter { .. }),
            "{err}"
        );
        assert!(check_adapter_base("x", CheckpointType::Lora, ImageBase::Other, ImageBase::Flux).is_ok());
    }
}
