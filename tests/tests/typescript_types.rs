//! The generated TypeScript types (`ts/src/generated/contract.d.ts`) against the JSON the `catalog`
//! binary really prints: every entry and compatibility answer, pasted into a TypeScript file annotated
//! with the contract's types, must type-check under `tsc --strict` (discriminants, required fields, no
//! unknown fields), so a web page that narrows on `modelType` never meets a shape it was not told of.

use std::path::Path;
use std::process::Command;

use e2e_tests::{Home, fixtures, smollm2_gguf};

#[test]
fn what_the_catalog_prints_type_checks_against_the_generated_types() {
    let ts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ts");
    let tsc = ts.join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.is_file(),
        "{} is missing: run `npm ci` in ts/ (scripts/test.sh does)",
        tsc.display()
    );
    let home = Home::new();
    let sources = [
        smollm2_gguf(),
        fixtures().join("models/tiny-llama-chat.gguf"),
        fixtures().join("llm/tiny/gemma2"),
        fixtures().join("sd/tiny-sd15"),
        fixtures().join("sd/tiny-sdxl.safetensors"),
        fixtures().join("sd/tiny-flux/dev"),
    ];
    let mut compat = Vec::new();
    for source in &sources {
        let entry = home.catalog_json(&["add", source.to_str().unwrap()]);
        compat.push(home.catalog_json(&["compat", entry["id"].as_str().unwrap()]));
    }
    let list = home.catalog_json(&["list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(sources.len()));

    let dir = tempfile::tempdir().unwrap();
    let contract =
        std::fs::canonicalize(ts.join("src/generated/contract")).unwrap_or(ts.join("src/generated/contract"));
    let source = format!(
        "import type {{ ModelEntry, Compatibility }} from {:?};\n\
         export const entries: ModelEntry[] = {};\n\
         export const compat: Compatibility[][] = {};\n\
         // Narrowing on the discriminant reaches each typed config.\n\
         export const families = entries.map((e) => (e.modelType === \"llm\" ? e.config.modelFamily + e.config.architecture : e.modelType));\n",
        contract.display().to_string(),
        serde_json::to_string_pretty(&list).unwrap(),
        serde_json::to_string_pretty(&compat).unwrap(),
    );
    let file = dir.path().join("check.ts");
    std::fs::write(&file, source).unwrap();
    let out = Command::new("node")
        .arg(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
        ])
        .arg(&file)
        .output()
        .expect("node runs tsc");
    assert!(
        out.status.success(),
        "tsc rejects what `catalog` printed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
