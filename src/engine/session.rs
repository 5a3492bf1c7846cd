//! A runbook session: one engine with the API and module resolution, one scope that persists
//! (the REPL evaluates input after input into it), and the run's unhandled failures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, Map, Scope, AST};

use super::api::{self, Api, ApiHandle};
use super::errors::{render_eval_error, render_parse_error, RunbookError, Sources};
use super::modules::Resolver;
use crate::context::Context;
use crate::report::Level;

/// An engine, its scope and the run's shared state.
pub struct Session {
    engine: Engine,
    scope: Scope<'static>,
    api: Option<Arc<Api>>,
    sources: Arc<Mutex<Sources>>,
    resolver: Arc<Resolver>,
    asts: Vec<AST>,
}

/// The bare engine: API registered, limits and strictness set, no run attached.
fn base_engine(resolver: Arc<Resolver>) -> Engine {
    let mut engine = Engine::new();
    engine.set_strict_variables(true);
    engine.set_max_call_levels(128);
    engine.set_max_expr_depths(128, 64);
    api::register(&mut engine);
    engine.set_module_resolver(SharedResolver(resolver));
    engine
}

/// Lets one resolver (and its record of what it resolved) outlive the engine that uses it.
struct SharedResolver(Arc<Resolver>);

impl rhai::ModuleResolver for SharedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: rhai::Position,
    ) -> Result<rhai::Shared<rhai::Module>, Box<rhai::EvalAltResult>> {
        self.0.resolve(engine, source, path, pos)
    }
}

impl Session {
    /// A session for a run (or the REPL) on `ctx`, with `params` visible as `params`.
    pub fn new(
        ctx: Option<Arc<Context>>,
        params: Map,
        lib_dirs: Vec<PathBuf>,
        flake_inputs: HashMap<String, PathBuf>,
    ) -> Session {
        let sources = Arc::new(Mutex::new(Sources::new()));
        let resolver = Arc::new(Resolver::new(lib_dirs, flake_inputs, sources.clone()));
        let mut engine = base_engine(resolver.clone());
        let api = ctx.map(|ctx| {
            Arc::new(Api {
                ctx,
                reports: Mutex::new(Vec::new()),
            })
        });
        if let Some(api) = &api {
            engine.set_default_tag(Dynamic::from(ApiHandle(api.clone())));
            let reporter = api.ctx.reporter.clone();
            engine.on_print(move |text| reporter.message(Level::Info, text.to_string()));
            let reporter = api.ctx.reporter.clone();
            engine.on_debug(move |text, source, pos| {
                let at = match (source, pos.line()) {
                    (Some(s), Some(l)) => format!("{s}:{l}: "),
                    _ => String::new(),
                };
                reporter.message(Level::Info, format!("{at}{text}"));
            });
            let interrupt = api.ctx.interrupt.clone();
            engine.on_progress(move |_| interrupt.stopping().then(|| Dynamic::from("interrupted")));
        }
        let mut scope = Scope::new();
        scope.push_constant("params", params);
        Session {
            engine,
            scope,
            api,
            sources,
            resolver,
            asts: Vec::new(),
        }
    }

    /// The module resolver (what `check` reports on).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The engine (for completion and docs).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Names of variables currently in scope.
    pub fn variables(&self) -> Vec<String> {
        self.scope
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect()
    }

    /// Names of functions the session's scripts defined.
    pub fn script_functions(&self) -> Vec<String> {
        self.asts
            .iter()
            .flat_map(|a| a.iter_functions().map(|f| f.name.to_string()))
            .collect()
    }

    /// Compiles `text` named `source`, with imports resolved at compile time so an unresolvable
    /// or broken library is reported before anything runs.
    pub fn compile(&mut self, source: &str, text: &str) -> Result<AST, RunbookError> {
        self.sources
            .lock()
            .unwrap()
            .insert(source.to_string(), text.to_string());
        let mut ast = self
            .engine
            .compile_with_scope(&self.scope, text)
            .map_err(|e| {
                let sources = self.sources.lock().unwrap();
                render_parse_error(&e, source, &sources)
            })?;
        ast.set_source(source);
        Ok(ast)
    }

    /// Runs a runbook file.
    pub fn run_file(&mut self, path: &Path) -> Result<Dynamic, RunbookError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RunbookError {
            exit: crate::exit::Exit::Input,
            rendered: format!("error: cannot read runbook {source}: {e}"),
            location: None,
        })?;
        self.eval(&source, &text)
    }

    /// Compiles and runs `text` in the persistent scope (functions it defines stay available).
    pub fn eval(&mut self, source: &str, text: &str) -> Result<Dynamic, RunbookError> {
        let ast = self.compile(source, text)?;
        let mut all = AST::empty();
        for previous in &self.asts {
            all = all.merge(&previous.clone_functions_only());
        }
        let all = all.merge(&ast);
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &all);
        self.asts.push(ast.clone_functions_only());
        result.map_err(|e| {
            let sources = self.sources.lock().unwrap();
            render_eval_error(&e, source, &sources)
        })
    }

    /// Failed steps whose reports the runbook never looked at: `(location, message)`.
    pub fn unhandled_failures(&self) -> Vec<(String, String)> {
        let Some(api) = &self.api else {
            return Vec::new();
        };
        let reports = api.reports.lock().unwrap();
        reports
            .iter()
            .filter(|r| !r.ok() && !r.inspected())
            .map(|r| {
                let failed: Vec<String> = r
                    .entries()
                    .iter()
                    .filter(|e| !e.ok)
                    .map(|e| format!("{} ({})", e.host.name, e.error.clone().unwrap_or_default()))
                    .collect();
                (
                    r.at().to_string(),
                    format!(
                        "`{}` failed on {} and the runbook did not check its report",
                        r.step(),
                        failed.join(", ")
                    ),
                )
            })
            .collect()
    }

    /// Forgets the reports seen so far (the REPL does this after each input).
    pub fn clear_reports(&self) {
        if let Some(api) = &self.api {
            api.reports.lock().unwrap().clear();
        }
    }
}

/// How the REPL shows a value: reports and hosts through their `to_string`, others as Rhai does.
pub fn display(_session: &Session, value: &Dynamic) -> String {
    if let Some(r) = value.clone().try_cast::<api::Report>() {
        return r.render();
    }
    if let Some(h) = value.clone().try_cast::<api::HostRef>() {
        return h.0.name.to_string();
    }
    value.to_string()
}
