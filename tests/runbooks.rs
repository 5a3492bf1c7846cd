//! Every example runbook in `runbooks/` and every embedded stdlib module compiles.

use nixdeploy::engine::Session;

fn compile(name: &str, text: &str) {
    let mut session = Session::new(None, Default::default(), vec![], Default::default());
    if let Err(e) = session.compile(name, text) {
        panic!("{name} does not compile:\n{}", e.rendered);
    }
}

#[test]
fn every_runbook_in_runbooks_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rhai") {
            compile(
                &path.display().to_string(),
                &std::fs::read_to_string(&path).unwrap(),
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "expected the example runbooks in {}",
        dir.display()
    );
}

#[test]
fn every_stdlib_module_compiles() {
    for (name, text) in nixdeploy::engine::stdlib::MODULES {
        compile(name, text);
    }
}
