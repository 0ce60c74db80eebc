use super::*;

fn info_with(files: &[&str]) -> ModelInfo {
    let siblings: Vec<Value> = files
        .iter()
        .map(|f| serde_json::json!({"rfilename": f}))
        .collect();
    serde_json::from_value(serde_json::json!({"id": "org/repo", "siblings": siblings})).unwrap()
}

#[test]
fn a_repo_of_ggufs_plans_a_header_read() {
    let id: CatalogId = "hf:org/repo".parse().unwrap();
    let plan = plan_fetch(&id, &info_with(&["README.md", "x-Q4_K_M.gguf", "x-F16.gguf"])).unwrap();
    assert_eq!(plan.gguf_file.as_deref(), Some("x-Q4_K_M.gguf"));
    let plan = plan_fetch(
        &id,
        &info_with(&["config.json", "tokenizer_config.json", "model.safetensors"]),
    )
    .unwrap();
    assert_eq!((plan.kind, plan.metadata_files.len()), (RepoKind::Llm, 2));
}

#[test]
fn revisions_are_encoded_in_urls() {
    assert_eq!(
        file_url("http://h/", "o/r", "refs/pr/1", "unet/a b.json"),
        "http://h/o/r/resolve/refs%2Fpr%2F1/unet/a%20b.json"
    );
}
