//! Weight file names: the one list of pickle formats (serialized Python objects that can run code when
//! loaded), so the catalog's refusal and the workers' refusal can never disagree.

/// Extensions (lower case, no dot) of pickle-based files: PyTorch's `.bin`/`.pt`/`.pth`, checkpoints'
/// `.ckpt`, and plain pickles.
pub const PICKLE_EXTENSIONS: &[&str] = &["bin", "pt", "pth", "ckpt", "pkl", "pickle"];

/// Extensions (lower case, no dot) of weight formats that hold only tensors and metadata.
pub const SAFE_WEIGHT_EXTENSIONS: &[&str] = &["safetensors", "gguf"];

/// The lower-case extension of the last component of a `/`-separated path, if any.
fn extension(path: &str) -> Option<String> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// True when a file name or relative path (`vae/diffusion_pytorch_model.bin`) is in a pickle format,
/// by extension, case-insensitively.
pub fn is_pickle_name(path: &str) -> bool {
    extension(path).is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.as_str()))
}

/// True when a file name is model weights of any format, pickle included (so it can be refused by name).
pub fn is_weight_name(path: &str) -> bool {
    extension(path).is_some_and(|e| {
        PICKLE_EXTENSIONS.contains(&e.as_str()) || SAFE_WEIGHT_EXTENSIONS.contains(&e.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pickle_format_is_named_whatever_its_folder_or_case() {
        for name in [
            "pytorch_model.bin",
            "vae/diffusion_pytorch_model.bin",
            "model.PT",
            "weights.pth",
            "sd15.ckpt",
            "x.pkl",
            "x.pickle",
            "unet/Model.Ckpt",
        ] {
            assert!(is_pickle_name(name), "{name}");
            assert!(is_weight_name(name), "{name}");
        }
        for name in [
            "model.safetensors",
            "m.gguf",
            "config.json",
            "bin",
            ".pt",
            "vae/",
            "notes.txt",
        ] {
            assert!(!is_pickle_name(name), "{name}");
        }
        assert!(is_weight_name("unet/diffusion_pytorch_model.fp16.safetensors"));
        assert!(!is_weight_name("tokenizer.json"));
    }
}
