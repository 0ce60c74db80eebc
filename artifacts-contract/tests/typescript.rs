//! The committed TypeScript declarations must be exactly what the Rust types generate.

use std::path::PathBuf;

#[test]
fn generated_declarations_are_up_to_date() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ts/src/generated/contract.d.ts");
    let fresh = artifacts_contract::typescript::declarations();
    if std::env::var_os("UPDATE_TS").is_some() {
        std::fs::write(&path, &fresh).expect("write contract.d.ts");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run `UPDATE_TS=1 cargo test -p artifacts-contract` and commit the result",
        path.display()
    );
}

#[test]
fn entry_type_is_a_discriminated_union_on_model_type() {
    let decls = artifacts_contract::typescript::declarations();
    assert!(
        decls.contains(r#"{ modelType: "llm"; config: LlmConfig }"#),
        "{decls}"
    );
    assert!(
        decls.contains(r#"{ modelType: "image"; config: ImageConfig }"#),
        "{decls}"
    );
    assert!(
        decls.contains("& TypedConfig"),
        "ModelEntry must intersect TypedConfig:\n{decls}"
    );
}
