//! Before a run touches any host: every library the runbook imports — and everything those
//! import — must be found and must parse. Nothing is evaluated here (a library's top level may
//! call primitives that only a real run can answer); errors read exactly as the run's own would.

use std::collections::BTreeSet;

use rhai::{ASTNode, EvalAltResult, Expr, Position, Stmt, AST};

use super::errors::{render_eval_error, Sources};
use super::modules::parse_error_in_module;
use super::{RunbookError, Session};

/// The string-constant imports of `ast` with their positions, function bodies included.
pub fn imports_of(ast: &AST) -> Vec<(String, Position)> {
    let mut found = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, _))) = path.last() {
            // The position of the path string: where the run's own resolver reports errors.
            if let Expr::StringConstant(s, pos) = &x.0 {
                found.push((s.to_string(), *pos));
            }
        }
        true
    });
    found
}

/// Finds and parses every library `ast` (the runbook `source`, text `text`) imports, recursively.
pub fn check_imports(
    session: &Session,
    source: &str,
    text: &str,
    ast: &AST,
) -> Result<(), RunbookError> {
    let mut sources = Sources::new();
    sources.insert(source.to_string(), text.to_string());
    let mut seen = BTreeSet::new();
    let mut stack = vec![source.to_string()];
    walk(session, source, ast, &mut sources, &mut seen, &mut stack)
        .map_err(|err| render_eval_error(&err, source, &sources))
}

fn walk(
    session: &Session,
    importer: &str,
    ast: &AST,
    sources: &mut Sources,
    seen: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
) -> Result<(), Box<EvalAltResult>> {
    for (name, pos) in imports_of(ast) {
        let found = session
            .resolver()
            .candidates(Some(importer), &name)
            .map_err(|e| Box::new(EvalAltResult::ErrorRuntime(e.into(), pos)))?;
        let Some(which) = found.into_iter().next() else {
            return Err(session.resolver().not_found(&name, pos));
        };
        let key = which.display();
        if let super::modules::LibraryPath::Stdlib(_) = which {
            session.resolver().mark_embedded(&key);
        }
        if let Some(i) = stack.iter().position(|k| *k == key) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(key);
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!("import cycle: {}", cycle.join(" → ")).into(),
                pos,
            )));
        }
        if !seen.insert(key.clone()) {
            continue;
        }
        let lib = which
            .text()
            .map_err(|e| Box::new(EvalAltResult::ErrorRuntime(e.into(), pos)))?;
        sources.insert(key.clone(), lib.clone());
        let lib_ast = session
            .engine()
            .compile(&lib)
            .map_err(|e| parse_error_in_module(&e, &key, sources, pos))?;
        stack.push(key.clone());
        let nested = walk(session, &key, &lib_ast, sources, seen, stack);
        stack.pop();
        nested.map_err(|e| Box::new(EvalAltResult::ErrorInModule(key, e, pos)))?;
    }
    Ok(())
}
