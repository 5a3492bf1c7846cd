//! Runbook parameters: declared in the runbook's header, listed by `nixdeploy run RUNBOOK --help`,
//! and type-checked against `--set` before anything runs.
//!
//! A declaration is a comment line of the form
//! `//! param NAME: TYPE [= DEFAULT]  help text`, with TYPE one of `string`, `int`, `float`,
//! `bool`. A parameter without a default is required. A runbook that declares no parameters
//! accepts any `--set` key as a string (as before declarations existed).

use rhai::{Dynamic, Map};

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name (`params.NAME`).
    pub name: String,
    /// `string`, `int`, `float` or `bool`.
    pub kind: Kind,
    /// The default as written; `None` means required.
    pub default: Option<String>,
    /// What it is for.
    pub help: String,
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    String,
    /// A whole number.
    Int,
    /// A number.
    Float,
    /// `true` or `false`.
    Bool,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "string" => Kind::String,
            "int" => Kind::Int,
            "float" => Kind::Float,
            "bool" => Kind::Bool,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
        }
    }

    fn value(self, text: &str) -> Result<Dynamic, String> {
        Ok(match self {
            Kind::String => Dynamic::from(text.to_string()),
            Kind::Int => Dynamic::from(
                text.parse::<i64>()
                    .map_err(|_| format!("`{text}` is not an int"))?,
            ),
            Kind::Float => Dynamic::from(
                text.parse::<f64>()
                    .map_err(|_| format!("`{text}` is not a float"))?,
            ),
            Kind::Bool => match text {
                "true" | "yes" | "1" => Dynamic::from(true),
                "false" | "no" | "0" => Dynamic::from(false),
                _ => return Err(format!("`{text}` is not a bool (true or false)")),
            },
        })
    }
}

/// Reads the declarations in `text`; a malformed declaration is an error naming its line.
pub fn declared(source: &str, text: &str) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("//! param ") else {
            continue;
        };
        let at = format!("{source}:{}", i + 1);
        let (name, rest) = rest.split_once(':').ok_or_else(|| {
            format!("{at}: a parameter is declared as `//! param NAME: TYPE [= DEFAULT] help`")
        })?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{at}: parameter name `{name}` must be letters, digits and `_`"
            ));
        }
        let rest = rest.trim_start();
        let kind_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let kind = Kind::parse(&rest[..kind_len]).ok_or_else(|| {
            format!(
                "{at}: parameter `{name}` has unknown type `{}`; use string, int, float or bool",
                &rest[..kind_len]
            )
        })?;
        let rest = rest[kind_len..].trim_start();
        let (default, help) = match rest.strip_prefix('=') {
            Some(after) => {
                let after = after.trim_start();
                let (value, help) = if let Some(quoted) = after.strip_prefix('"') {
                    let end = quoted
                        .find('"')
                        .ok_or_else(|| format!("{at}: unterminated default of `{name}`"))?;
                    (
                        quoted[..end].to_string(),
                        quoted[end + 1..].trim().to_string(),
                    )
                } else {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (after[..end].to_string(), after[end..].trim().to_string())
                };
                let _checked = kind
                    .value(&value)
                    .map_err(|e| format!("{at}: default of `{name}`: {e}"))?;
                (Some(value), help)
            }
            None => (None, rest.trim().to_string()),
        };
        if params.iter().any(|p: &Param| p.name == name) {
            return Err(format!("{at}: parameter `{name}` is declared twice"));
        }
        params.push(Param {
            name: name.to_string(),
            kind,
            default,
            help,
        });
    }
    Ok(params)
}

/// The `params` map for a run: `--set` values checked against the declarations, defaults
/// filled in. Without declarations every value is a string.
pub fn resolve(declared: &[Param], set: &[(String, String)]) -> Result<Map, String> {
    let mut map = Map::new();
    if declared.is_empty() {
        for (k, v) in set {
            map.insert(k.as_str().into(), Dynamic::from(v.clone()));
        }
        return Ok(map);
    }
    for (k, v) in set {
        let Some(p) = declared.iter().find(|p| &p.name == k) else {
            let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "--set {k}: this runbook has no parameter `{k}`; its parameters: {}",
                known.join(", ")
            ));
        };
        let value = p.kind.value(v).map_err(|e| format!("--set {k}: {e}"))?;
        map.insert(k.as_str().into(), value);
    }
    for p in declared {
        if map.contains_key(p.name.as_str()) {
            continue;
        }
        match &p.default {
            Some(d) => {
                map.insert(p.name.as_str().into(), p.kind.value(d)?);
            }
            None => {
                return Err(format!(
                    "parameter `{}` is required: pass --set {}=...",
                    p.name, p.name
                ))
            }
        }
    }
    Ok(map)
}

/// The parameter list for `--help`.
pub fn render_help(params: &[Param]) -> String {
    if params.is_empty() {
        return "This runbook declares no parameters (any --set KEY=VALUE is passed as a string).\n".into();
    }
    let width = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut out = String::from("Parameters (--set NAME=VALUE):\n");
    for p in params {
        let default = match &p.default {
            Some(d) if d.is_empty() => " (default: \"\")".to_string(),
            Some(d) => format!(" (default: {d})"),
            None => " (required)".to_string(),
        };
        out.push_str(&format!(
            "  {:<width$}  {:<6} {}{}\n",
            p.name,
            p.kind.name(),
            p.help,
            default
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "//! param mode: string = \"switch\"  activation mode\n//! param batch: int = 2  hosts per wave\n//! param soak: float  seconds to watch\nlet x = 1;\n";

    #[test]
    fn declarations_are_read_from_the_header() {
        let p = declared("r.rhai", HEADER).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].default.as_deref(), Some("switch"));
        assert_eq!(p[1].kind, Kind::Int);
        assert_eq!(p[2].default, None);
        assert_eq!(p[0].help, "activation mode");
    }

    #[test]
    fn set_values_are_typed_and_defaults_filled() {
        let p = declared("r.rhai", HEADER).unwrap();
        let m = resolve(
            &p,
            &[("batch".into(), "4".into()), ("soak".into(), "1.5".into())],
        )
        .unwrap();
        assert_eq!(m["batch"].as_int().unwrap(), 4);
        assert_eq!(m["mode"].clone().into_string().unwrap(), "switch");
    }

    #[test]
    fn bad_set_values_are_rejected() {
        let p = declared("r.rhai", HEADER).unwrap();
        assert!(resolve(
            &p,
            &[("batch".into(), "many".into()), ("soak".into(), "1".into())]
        )
        .unwrap_err()
        .contains("not an int"));
        assert!(resolve(&p, &[("colour".into(), "red".into())])
            .unwrap_err()
            .contains("no parameter `colour`"));
        assert!(resolve(&p, &[]).unwrap_err().contains("`soak` is required"));
    }

    #[test]
    fn malformed_declarations_name_their_line() {
        let err = declared("r.rhai", "\n//! param x: number\n").unwrap_err();
        assert!(err.starts_with("r.rhai:2:"), "{err}");
        assert!(declared("r.rhai", "//! param x: int = abc\n")
            .unwrap_err()
            .contains("not an int"));
    }
}
