use super::*;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

#[test]
fn recommendations_are_the_most_common_image_settings() {
    let version = serde_json::json!({
        "id": 2, "modelId": 1, "baseModel": "Pony", "model": {"name": "M", "type": "Checkpoint"},
        "files": [{"name": "m.safetensors", "type": "Model", "metadata": {"format": "SafeTensor"},
                   "hashes": {"SHA256": "AB"}, "primary": true}],
        "images": [
            {"url": "u1", "nsfwLevel": 1, "meta": {"sampler": "Euler a", "steps": 25, "cfgScale": 7, "clipSkip": 2}},
            {"url": "u2", "nsfwLevel": 8, "meta": {"sampler": "DPM++ 2M Karras", "steps": 30, "cfgScale": 6.5, "Clip skip": "2"}},
            {"url": "u3", "meta": {"sampler": "DPM++ 2M Karras", "steps": 30, "cfgScale": 6.5}}
        ]
    });
    let e = entry_from_version_json(version.to_string().as_bytes(), false, now()).unwrap();
    let c = e.config.as_image().unwrap();
    assert_eq!(c.base, artifacts_contract::ImageBase::Sdxl);
    assert_eq!(c.samplers, vec!["DPM++ 2M Karras".to_string()]);
    assert_eq!(
        (c.steps, c.cfg_scale, c.clip_skip),
        (Some(30), Some(6.5), Some(2))
    );
    assert_eq!(c.preview_images.iter().filter(|p| p.nsfw).count(), 1);
    assert_eq!(e.files[0].sha256.as_deref(), Some("ab"));
    assert_eq!(e.id.to_string(), "civitai:1@2");
}

#[test]
fn pickle_only_versions_are_refused_unless_allowed() {
    let version = serde_json::json!({
        "id": 2, "modelId": 1, "baseModel": "SD 1.5",
        "files": [{"name": "m.ckpt", "type": "Model", "metadata": {"format": "PickleTensor"}, "primary": true}]
    });
    let err = entry_from_version_json(version.to_string().as_bytes(), false, now()).unwrap_err();
    assert!(
        err.to_string().contains("m.ckpt is a pickle file") && err.to_string().contains("--allow-pickle")
    );
    let e = entry_from_version_json(version.to_string().as_bytes(), true, now()).unwrap();
    assert_eq!(e.pickle_files().count(), 1);
}

#[test]
fn remote_file_names_cannot_escape() {
    let version = serde_json::json!({
        "id": 2, "modelId": 1, "baseModel": "SD 1.5",
        "files": [{"name": "../../.bashrc", "type": "Model", "metadata": {"format": "SafeTensor"}}]
    });
    let err = entry_from_version_json(version.to_string().as_bytes(), false, now()).unwrap_err();
    assert!(
        matches!(&err, IngestError::UnsafeName(n) if n.value == "../../.bashrc"),
        "{err}"
    );
}
