//! The interactive front end: rustyline on the same `Session` and context as `nixdeploy run`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context as LineContext, Helper, Highlighter, Hinter};

use crate::context::Context;
use crate::engine::docs::{self, FnDoc};
use crate::engine::Session;

/// Words Tab can complete: hosts, `@tags`, functions, variables and REPL commands.
#[derive(Helper, Highlighter, Hinter)]
pub struct ReplHelper {
    fixed: Vec<String>,
    /// Variables and script functions, refreshed after each input.
    pub dynamic: Vec<String>,
}

const COMMANDS: &[&str] = &[":help", ":hosts", ":load", ":quit"];

impl ReplHelper {
    fn new(ctx: &Context, api: &[FnDoc], known: impl IntoIterator<Item = String>) -> ReplHelper {
        let mut fixed: Vec<String> = ctx
            .inventory
            .hosts
            .values()
            .map(|h| h.name.to_string())
            .collect();
        let mut tags: Vec<String> = ctx
            .inventory
            .hosts
            .values()
            .flat_map(|h| h.tags.iter().map(|t| format!("@{t}")))
            .collect();
        tags.sort();
        tags.dedup();
        fixed.extend(tags);
        fixed.extend(api.iter().map(|f| f.name.clone()));
        fixed.extend(
            known
                .into_iter()
                .filter(|n| n.chars().next().is_some_and(char::is_alphabetic) && !n.contains('$')),
        );
        fixed.extend(COMMANDS.iter().map(|c| c.to_string()));
        fixed.sort();
        fixed.dedup();
        ReplHelper {
            fixed,
            dynamic: Vec::new(),
        }
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '@' | '.' | ':')
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &LineContext<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_word(*c))
            .last()
            .map_or(pos, |(i, _)| i);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let mut matches: Vec<Pair> = self
            .fixed
            .iter()
            .chain(self.dynamic.iter())
            .filter(|c| c.starts_with(word) && c.as_str() != word)
            .map(|c| Pair {
                display: c.clone(),
                replacement: c.clone(),
            })
            .collect();
        matches.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((start, matches))
    }
}

/// `true` while brackets or a string are still open: the input continues on the next line.
pub fn incomplete(text: &str) -> bool {
    let mut depth: i64 = 0;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => match c {
                '\\' => {
                    chars.next();
                }
                c if c == q => quote = None,
                _ => {}
            },
            None => match c {
                '"' | '`' => quote = Some(c),
                '\'' => quote = Some('\''),
                '/' if chars.peek() == Some(&'/') => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            break;
                        }
                    }
                }
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth > 0 || quote.is_some()
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if !input.trim_start().starts_with(':') && incomplete(input) {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

/// Ctrl-C while an input is evaluating cancels it at once: both interrupt levels, so in-flight
/// host work is abandoned too (at the prompt rustyline reads Ctrl-C as a key instead).
fn watch_interrupts(ctx: &Arc<Context>, evaluating: Arc<AtomicBool>) {
    let ctx2 = ctx.clone();
    ctx.runtime.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if evaluating.load(Ordering::SeqCst) && !ctx2.interrupt.aborting() {
                ctx2.interrupt.escalate();
                ctx2.interrupt.escalate();
            }
        }
    });
}

fn help(api: &[FnDoc], name: Option<&str>) {
    match name {
        None => {
            let mut names: Vec<&str> = api.iter().map(|f| f.name.as_str()).collect();
            names.dedup();
            println!(
                "API functions (`:help NAME` for one):\n  {}",
                names.join(" ")
            );
            println!("stdlib modules: import \"rollout\" as rollout; (see docs/api/stdlib.md)");
            println!("commands: :help [NAME]  :hosts [SELECTOR]  :load FILE  :quit");
        }
        Some(name) => {
            let found: Vec<&FnDoc> = api.iter().filter(|f| f.name == name).collect();
            if found.is_empty() {
                println!("no API function `{name}` (`:help` lists them)");
            }
            for f in found {
                println!("{}\n\n{}\n", f.signature, f.doc);
            }
        }
    }
}

fn hosts(ctx: &Context, selector: Option<&str>) {
    match ctx.inventory.select(selector) {
        Ok(hosts) => {
            for h in hosts {
                println!("{}  {}", h.name, h.tags.join(","));
            }
        }
        Err(e) => eprintln!("error: {e:#}"),
    }
}

/// Runs one input (a command or Rhai text); returns `false` for `:quit`.
fn handle(session: &mut Session, ctx: &Context, api: &[FnDoc], line: &str) -> bool {
    let trimmed = line.trim();
    let (command, arg) = match trimmed.split_once(char::is_whitespace) {
        Some((c, a)) => (c, Some(a.trim()).filter(|a| !a.is_empty())),
        None => (trimmed, None),
    };
    let outcome = match command {
        ":quit" | ":q" => return false,
        ":help" => {
            help(api, arg);
            return true;
        }
        ":hosts" => {
            hosts(ctx, arg);
            return true;
        }
        ":load" => match arg {
            Some(file) => session.run_file(Path::new(file)),
            None => {
                eprintln!("error: `:load FILE`");
                return true;
            }
        },
        c if c.starts_with(':') => {
            eprintln!("error: unknown command `{c}` (`:help` lists them)");
            return true;
        }
        _ => session.eval("<repl>", line),
    };
    // End this input's progress bars first: clearing them must not erase what is printed next.
    ctx.reporter.finish();
    match outcome {
        Ok(value) if !value.is_unit() => println!("{}", crate::engine::display(session, &value)),
        Ok(_) => {}
        Err(e) => eprintln!("{}", e.rendered),
    }
    true
}

/// The read-eval-print loop; returns when the user quits (`:quit`, Ctrl-D).
pub fn run(session: &mut Session, ctx: &Arc<Context>) -> anyhow::Result<()> {
    let api = docs::api_functions(session.engine());
    let known = docs::known_functions(session.engine());
    let mut editor: rustyline::Editor<ReplHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::new()?;
    editor.set_helper(Some(ReplHelper::new(ctx, &api, known)));
    let history = crate::paths::state_dir().join("repl_history");
    if let Some(dir) = history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = editor.load_history(&history);
    let evaluating = Arc::new(AtomicBool::new(false));
    watch_interrupts(ctx, evaluating.clone());
    println!(
        "nixdeploy repl — {} host(s); `:help` for the API, Ctrl-D to leave",
        ctx.allowed.len()
    );
    loop {
        match editor.readline("nixdeploy> ") {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                evaluating.store(true, Ordering::SeqCst);
                let go_on = handle(session, ctx, &api, &line);
                evaluating.store(false, Ordering::SeqCst);
                // Progress bars of this input end here, so the prompt is not drawn over.
                ctx.reporter.finish();
                ctx.interrupt.reset();
                session.clear_reports();
                if let Some(helper) = editor.helper_mut() {
                    helper.dynamic = session.variables();
                    helper.dynamic.extend(session.script_functions());
                }
                if !go_on {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::incomplete;

    #[test]
    fn open_brackets_and_strings_continue_on_the_next_line() {
        assert!(incomplete("fn f() {"));
        assert!(incomplete("let a = [1,"));
        assert!(incomplete("let s = \"abc"));
        assert!(!incomplete("let s = \"{\";"));
        assert!(!incomplete("exec(hosts(), \"echo }\") // {"));
    }
}
