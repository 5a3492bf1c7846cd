//! Runbook errors rendered for people: message, `file:line:col`, the source line with a caret,
//! and the chain of calls through functions and modules.

use std::collections::HashMap;
use std::fmt::Write;

use rhai::{EvalAltResult, ParseError, Position};

use super::api::gates::Declined;
use crate::exit::Exit;

/// A runbook that failed to compile or run, already rendered.
#[derive(Debug)]
pub struct RunbookError {
    /// How the process should end.
    pub exit: Exit,
    /// The rendered text (starts with `error:`).
    pub rendered: String,
    /// The innermost `file:line:col`, when known.
    pub location: Option<String>,
}

impl std::fmt::Display for RunbookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl std::error::Error for RunbookError {}

/// Source texts by the name they were compiled under (runbook path, module path, `<repl>`).
pub type Sources = HashMap<String, String>;

fn excerpt(out: &mut String, sources: &Sources, source: &str, pos: Position) -> Option<String> {
    let (line, col) = (pos.line()?, pos.position().unwrap_or(1));
    let loc = format!("{source}:{line}:{col}");
    let _ = writeln!(out, "  --> {loc}");
    if let Some(text) = sources.get(source).and_then(|t| t.lines().nth(line - 1)) {
        let num = line.to_string();
        let pad = " ".repeat(num.len());
        let caret: String = text
            .chars()
            .take(col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{num} | {text}");
        let _ = writeln!(out, "{pad} | {caret}^");
    }
    Some(loc)
}

/// Renders a compile error in `source`.
pub fn render_parse_error(err: &ParseError, source: &str, sources: &Sources) -> RunbookError {
    let mut out = format!("error: {}\n", err.err_type());
    let location = excerpt(&mut out, sources, source, err.position());
    RunbookError {
        exit: Exit::Runbook,
        rendered: out.trim_end().to_string(),
        location,
    }
}

/// Renders a runtime error raised while running `source`.
pub fn render_eval_error(err: &EvalAltResult, source: &str, sources: &Sources) -> RunbookError {
    // Walk inwards: each function call or module import is a frame, the innermost error is the message.
    let mut frames: Vec<(String, String, Position)> = Vec::new();
    let mut current = err;
    let mut src = source.to_string();
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(name, fn_src, inner, pos) => {
                frames.push((format!("in `{name}`, called"), src.clone(), *pos));
                if !fn_src.is_empty() {
                    src = fn_src.clone();
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(path, inner, pos) => {
                frames.push((format!("in module `{path}`, imported"), src.clone(), *pos));
                // The resolver names modules by the file they were read from, as in `sources`.
                src = path.clone();
                current = inner;
            }
            _ => break,
        }
    }
    let (exit, message) = match current {
        EvalAltResult::ErrorRuntime(value, _) if value.is::<Declined>() => {
            (Exit::Declined, value.clone().cast::<Declined>().0)
        }
        EvalAltResult::ErrorRuntime(value, _) => (Exit::Runbook, value.to_string()),
        EvalAltResult::ErrorTerminated(..) => (Exit::Interrupted, "interrupted".to_string()),
        other => (Exit::Runbook, without_position(&other.to_string())),
    };
    let mut out = format!("error: {message}\n");
    let location = excerpt(&mut out, sources, &src, current.position());
    for (what, at_src, pos) in frames.iter().rev() {
        if let (Some(l), Some(c)) = (pos.line(), pos.position()) {
            let _ = writeln!(out, "   = {what} at {at_src}:{l}:{c}");
        }
    }
    RunbookError {
        exit,
        rendered: out.trim_end().to_string(),
        location,
    }
}

/// Rhai appends ` (line N, position M)` to messages; the excerpt shows that better.
fn without_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(i) if message.ends_with(')') => message[..i].to_string(),
        _ => message.to_string(),
    }
}
