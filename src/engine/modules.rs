//! Module resolution for `import "name" as x;`: relative to the importing file, then `--lib`
//! directories and `NIXDEPLOY_PATH`, then flake inputs (`flake:input/name`), then the embedded stdlib.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

use super::errors::Sources;

/// Where an import was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibraryPath {
    /// A file on disk.
    File(PathBuf),
    /// A module embedded in the binary.
    Stdlib(String),
}

impl LibraryPath {
    /// The library's source text.
    pub fn text(&self) -> Result<String, String> {
        match self {
            LibraryPath::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read module {}: {e}", p.display())),
            LibraryPath::Stdlib(n) => Ok(super::stdlib::source(n).unwrap_or_default().to_string()),
        }
    }

    /// The name modules are compiled under (and errors point at).
    pub fn display(&self) -> String {
        match self {
            LibraryPath::File(p) => p.display().to_string(),
            LibraryPath::Stdlib(n) => format!("stdlib/{n}.rhai"),
        }
    }
}

/// One resolved import: (import text, importing file, the winner, the candidates it shadowed).
pub type Resolution = (String, String, LibraryPath, Vec<LibraryPath>);

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Resolves and loads modules; shared by `run`, `repl` and `check`.
pub struct Resolver {
    lib_dirs: Vec<PathBuf>,
    flake_inputs: HashMap<String, PathBuf>,
    sources: Arc<Mutex<Sources>>,
    cache: Mutex<HashMap<String, Shared<Module>>>,
    loading: Mutex<Vec<String>>,
    /// Every import resolved: (import text, importing file, where it was found, shadowed candidates).
    pub resolved: Mutex<Vec<Resolution>>,
    /// Sources that live in the binary (stdlib modules, shipped runbooks): their imports are
    /// never looked up next to them on disk, where a same-named file is not theirs.
    embedded: Mutex<HashSet<String>>,
}

impl Resolver {
    /// A resolver searching `lib_dirs` (then `NIXDEPLOY_PATH`), with the deploying flake's inputs.
    pub fn new(
        mut lib_dirs: Vec<PathBuf>,
        flake_inputs: HashMap<String, PathBuf>,
        sources: Arc<Mutex<Sources>>,
    ) -> Resolver {
        if let Ok(extra) = std::env::var("NIXDEPLOY_PATH") {
            lib_dirs.extend(
                extra
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
            );
        }
        Resolver {
            lib_dirs,
            flake_inputs,
            sources,
            cache: Mutex::new(HashMap::new()),
            loading: Mutex::new(Vec::new()),
            resolved: Mutex::new(Vec::new()),
            embedded: Mutex::new(HashSet::new()),
        }
    }

    /// Marks `source` as text from the binary, not a file: its imports skip the relative lookup.
    pub fn mark_embedded(&self, source: &str) {
        self.embedded.lock().unwrap().insert(source.to_string());
    }

    fn with_ext(name: &str) -> String {
        if name.ends_with(".rhai") {
            name.to_string()
        } else {
            format!("{name}.rhai")
        }
    }

    /// Every place `name` resolves to, in precedence order (the first one wins).
    pub fn candidates(
        &self,
        importer: Option<&str>,
        name: &str,
    ) -> Result<Vec<LibraryPath>, String> {
        let mut found = Vec::new();
        if let Some(rest) = name.strip_prefix("flake:") {
            let (input, module) = rest.split_once('/').ok_or_else(|| {
                format!("`{name}`: a flake import is `flake:INPUT/MODULE`, e.g. `flake:ops-lib/rollout`")
            })?;
            let Some(dir) = self.flake_inputs.get(input) else {
                let mut known: Vec<&str> = self.flake_inputs.keys().map(String::as_str).collect();
                known.sort();
                return Err(if known.is_empty() {
                    format!("`{name}`: the deploying flake has no inputs (or none were read)")
                } else {
                    format!(
                        "`{name}`: the deploying flake has no input `{input}`; its inputs: {}",
                        known.join(", ")
                    )
                });
            };
            let p = dir.join(Self::with_ext(module));
            if p.is_file() {
                found.push(LibraryPath::File(p));
            }
            return Ok(found);
        }
        let file = Self::with_ext(name);
        let base = importer
            .map(Path::new)
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let relative = if Path::new(&file).is_absolute() {
            PathBuf::from(&file)
        } else {
            base.join(&file)
        };
        // A runbook named like a library (`canary.rhai` importing "canary") must not import itself.
        let is_importer = importer.is_some_and(|i| same_file(Path::new(i), &relative));
        // `stdlib/canary.rhai` importing "checks" means the embedded one, even when the current
        // directory happens to hold a stdlib/ folder (nixdeploy's own checkout does).
        let embedded = importer.is_some_and(|i| self.embedded.lock().unwrap().contains(i));
        if relative.is_file() && !is_importer && !embedded {
            found.push(LibraryPath::File(relative));
        }
        if !Path::new(&file).is_absolute() {
            for dir in &self.lib_dirs {
                let p = dir.join(&file);
                if p.is_file() {
                    found.push(LibraryPath::File(p));
                }
            }
            if super::stdlib::source(name.trim_end_matches(".rhai")).is_some() {
                found.push(LibraryPath::Stdlib(
                    name.trim_end_matches(".rhai").to_string(),
                ));
            }
        }
        Ok(found)
    }

    fn load(
        &self,
        engine: &Engine,
        which: &LibraryPath,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let key = which.display();
        if let Some(m) = self.cache.lock().unwrap().get(&key) {
            return Ok(m.clone());
        }
        let text = which.text()?;
        if let LibraryPath::Stdlib(_) = which {
            self.mark_embedded(&key);
        }
        self.sources
            .lock()
            .unwrap()
            .insert(key.clone(), text.clone());
        {
            let mut loading = self.loading.lock().unwrap();
            if let Some(i) = loading.iter().position(|k| *k == key) {
                let mut cycle: Vec<String> = loading[i..].to_vec();
                cycle.push(key.clone());
                return Err(format!("import cycle: {}", cycle.join(" → ")).into());
            }
            loading.push(key.clone());
        }
        let result = (|| {
            let mut ast = engine.compile(&text).map_err(|e| {
                parse_error_in_module(&e, &key, &self.sources.lock().unwrap(), Position::NONE)
            })?;
            ast.set_source(key.as_str());
            let module = Module::eval_ast_as_new(Scope::new(), &ast, engine).map_err(|e| {
                Box::new(EvalAltResult::ErrorInModule(key.clone(), e, Position::NONE))
            })?;
            Ok::<_, Box<EvalAltResult>>(Shared::new(module))
        })();
        self.loading.lock().unwrap().retain(|k| *k != key);
        let module = result?;
        self.cache.lock().unwrap().insert(key, module.clone());
        Ok(module)
    }
}

/// A library's parse error as the run reports it: the library `key`, imported at `at`.
pub fn parse_error_in_module(
    e: &rhai::ParseError,
    key: &str,
    sources: &Sources,
    at: Position,
) -> Box<EvalAltResult> {
    let rendered = super::errors::render_parse_error(e, key, sources).rendered;
    let first = rendered.trim_start_matches("error: ").lines().next();
    Box::new(EvalAltResult::ErrorInModule(
        key.to_string(),
        Box::new(EvalAltResult::ErrorRuntime(
            first.unwrap_or("").to_string().into(),
            e.position(),
        )),
        at,
    ))
}

impl Resolver {
    /// The error for an import found nowhere, listing where it was looked for.
    pub fn not_found(&self, path: &str, pos: Position) -> Box<EvalAltResult> {
        let mut places = vec!["next to the importing file".to_string()];
        places.extend(self.lib_dirs.iter().map(|d| d.display().to_string()));
        places.push("the stdlib".into());
        Box::new(EvalAltResult::ErrorRuntime(
            format!("cannot find module `{path}`; looked {}", places.join(", ")).into(),
            pos,
        ))
    }
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let found = self
            .candidates(source, path)
            .map_err(|e| Box::new(EvalAltResult::ErrorRuntime(e.into(), pos)))?;
        let Some(first) = found.first().cloned() else {
            return Err(self.not_found(path, pos));
        };
        self.resolved.lock().unwrap().push((
            path.to_string(),
            source.unwrap_or("").to_string(),
            first.clone(),
            found[1..].to_vec(),
        ));
        self.load(engine, &first).map_err(|e| match *e {
            EvalAltResult::ErrorInModule(name, inner, Position::NONE) => {
                Box::new(EvalAltResult::ErrorInModule(name, inner, pos))
            }
            other => Box::new(EvalAltResult::ErrorInModule(
                first.display(),
                Box::new(other),
                pos,
            )),
        })
    }
}
