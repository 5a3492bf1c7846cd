//! `nixdeploy doc`: the committed reference in `docs/api/` is what the code generates.

use std::path::Path;

mod common;

#[test]
fn committed_api_reference_matches_the_code() {
    let out = tempfile::TempDir::new().unwrap();
    common::nixdeploy(&["doc", "--out"])
        .args(&[out.path()])
        .success();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api");
    for name in ["api.md", "stdlib.md", "nixdeploy.d.rhai"] {
        let fresh = std::fs::read_to_string(out.path().join(name)).unwrap();
        let old = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        assert!(
            fresh == old,
            "docs/api/{name} is stale: run `nixdeploy doc --out docs/api` and commit it"
        );
    }
}

#[test]
fn api_reference_documents_exec_with_its_example() {
    let out = tempfile::TempDir::new().unwrap();
    common::nixdeploy(&["doc", "--out"])
        .args(&[out.path()])
        .success();
    let api = std::fs::read_to_string(out.path().join("api.md")).unwrap();
    assert!(api.contains("## `exec`"));
    assert!(api.contains("exec(hosts: Dynamic, command: Dynamic) -> Report"));
    assert!(api.contains("let out = exec(hosts(\"@web\"), \"uname -r\");"));
}
