//! Key specs (from a runbook map or the inventory) and reading their secret contents.

use std::path::PathBuf;

/// Where a key's content comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// Inline text.
    Text(String),
    /// A local file.
    File(PathBuf),
    /// A local command whose stdout is the secret (`["pass", "show", "app"]`).
    Command(Vec<String>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Text(_) => f.write_str("Text(<redacted>)"),
            Source::File(p) => write!(f, "File({})", p.display()),
            Source::Command(argv) => write!(f, "Command({argv:?})"),
        }
    }
}

/// When a key is uploaded relative to activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadAt {
    /// Before the new system is activated (the default).
    PreActivation,
    /// After activation (for owners the new system creates).
    PostActivation,
}

/// A validated key spec.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The file name (no `/`).
    pub name: String,
    /// Where the content comes from.
    pub source: Source,
    /// The absolute directory it lands in (`/run/keys`).
    pub dest_dir: String,
    /// Owner.
    pub user: String,
    /// Group.
    pub group: String,
    /// Mode bits, at most `0o777`.
    pub permissions: u32,
    /// When it is uploaded.
    pub upload_at: UploadAt,
    /// The user accepted a `dest_dir` (or a parent) writable by someone other than root
    /// (`insecure_dest_dir: true`); see docs/secrets.md.
    pub insecure_dest_dir: bool,
}

/// Secret bytes; never printed.
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// Validates every inventory key of `hosts` (spec and readable source) without contacting any
/// host, so a bad spec stops a run before its first step rather than at `upload_keys`.
pub fn check_hosts(hosts: &[std::sync::Arc<crate::fleet::Host>]) -> Result<(), String> {
    for host in hosts {
        for (name, value) in &host.keys {
            KeySpec::parse(value, Some(name))
                .and_then(|spec| spec.check_source())
                .map_err(|e| format!("host {}: inventory {e}", host.name))?;
        }
    }
    Ok(())
}

fn valid_account(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl KeySpec {
    /// Validates a spec given as JSON (runbook maps are converted to JSON first). Accepts
    /// snake_case and the inventory's camelCase (`destDir`, `uploadAt`, `keyFile`, `keyCommand`).
    pub fn parse(
        value: &serde_json::Value,
        fallback_name: Option<&str>,
    ) -> Result<KeySpec, String> {
        let obj = value.as_object().ok_or("a key spec must be a map")?;
        let known = [
            "name",
            "text",
            "file",
            "keyFile",
            "command",
            "keyCommand",
            "dest_dir",
            "destDir",
            "user",
            "group",
            "permissions",
            "upload_at",
            "uploadAt",
            "insecure_dest_dir",
            "insecureDestDir",
        ];
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown field `{k}`; known fields: name, text, file, command, dest_dir, user, group, permissions, upload_at, insecure_dest_dir"));
        }
        let get = |a: &str, b: &str| obj.get(a).or_else(|| obj.get(b)).filter(|v| !v.is_null());
        let string = |a: &str, b: &str| -> Result<Option<String>, String> {
            match get(a, b) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("field `{a}` must be a string, found {other}")),
            }
        };
        let name = match string("name", "name")? {
            Some(n) => n,
            None => fallback_name
                .map(str::to_string)
                .ok_or("field `name` is required")?,
        };
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.contains('\0')
        {
            return Err(format!(
                "key name `{name}` must be a plain file name (no `/`, not `.` or `..`)"
            ));
        }
        let label = format!("key `{name}`");
        let mut sources = Vec::new();
        if let Some(t) = string("text", "text").map_err(|e| format!("{label}: {e}"))? {
            sources.push(Source::Text(t));
        }
        if let Some(f) = string("file", "keyFile").map_err(|e| format!("{label}: {e}"))? {
            let path = PathBuf::from(f);
            if let Some(err) = in_nix_store(&path) {
                return Err(format!("{label}: {err}"));
            }
            sources.push(Source::File(path));
        }
        if let Some(c) = get("command", "keyCommand") {
            let argv: Option<Vec<String>> = c
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|w| w.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                })
                .unwrap_or(None);
            match argv {
                Some(argv) if !argv.is_empty() => sources.push(Source::Command(argv)),
                _ => return Err(format!("{label}: `command` must be a non-empty array of strings, e.g. [\"pass\", \"show\", \"app\"]")),
            }
        }
        let source = match sources.len() {
            1 => sources.remove(0),
            0 => {
                return Err(format!(
                    "{label}: give exactly one of `text`, `file` or `command`"
                ))
            }
            _ => {
                return Err(format!(
                    "{label}: give exactly one of `text`, `file` or `command`, not several"
                ))
            }
        };
        let dest_dir = string("dest_dir", "destDir")
            .map_err(|e| format!("{label}: {e}"))?
            .unwrap_or_else(|| "/run/keys".into());
        if !dest_dir.starts_with('/') || dest_dir.split('/').any(|c| c == "..") {
            return Err(format!(
                "{label}: `dest_dir` must be an absolute path without `..`, found `{dest_dir}`"
            ));
        }
        let user = string("user", "user")
            .map_err(|e| format!("{label}: {e}"))?
            .unwrap_or_else(|| "root".into());
        let group = string("group", "group")
            .map_err(|e| format!("{label}: {e}"))?
            .unwrap_or_else(|| "root".into());
        for (what, v) in [("user", &user), ("group", &group)] {
            if !valid_account(v) {
                return Err(format!(
                    "{label}: `{what}` `{v}` is not a valid account name"
                ));
            }
        }
        let permissions = match get("permissions", "permissions") {
            None => 0o600,
            Some(serde_json::Value::String(p)) => {
                parse_mode(p).map_err(|e| format!("{label}: {e}"))?
            }
            Some(other) => {
                return Err(format!(
                "{label}: `permissions` must be an octal string such as \"0600\", found {other}"
            ))
            }
        };
        let upload_at = match string("upload_at", "uploadAt").map_err(|e| format!("{label}: {e}"))?.as_deref() {
            None | Some("pre-activation") => UploadAt::PreActivation,
            Some("post-activation") => UploadAt::PostActivation,
            Some(other) => {
                return Err(format!("{label}: `upload_at` must be \"pre-activation\" or \"post-activation\", found \"{other}\""))
            }
        };
        let insecure_dest_dir = match get("insecure_dest_dir", "insecureDestDir") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "{label}: `insecure_dest_dir` must be true or false, found {other}"
                ))
            }
        };
        Ok(KeySpec {
            name,
            source,
            dest_dir,
            user,
            group,
            permissions,
            upload_at,
            insecure_dest_dir,
        })
    }

    /// The destination path on the host.
    pub fn dest(&self) -> String {
        format!("{}/{}", self.dest_dir.trim_end_matches('/'), self.name)
    }

    /// Checks the source can be read, before any host is touched (files exist, are readable
    /// and do not resolve into the Nix store).
    pub fn check_source(&self) -> Result<(), String> {
        if let Source::File(p) = &self.source {
            std::fs::File::open(p)
                .map_err(|e| format!("key `{}`: cannot read {}: {e}", self.name, p.display()))?;
            if let Some(err) = std::fs::canonicalize(p).ok().and_then(|c| in_nix_store(&c)) {
                return Err(format!(
                    "key `{}`: {} resolves to a store path: {err}",
                    self.name,
                    p.display()
                ));
            }
        }
        Ok(())
    }

    /// Reads the secret (runs the command). Errors never include the content.
    pub fn read(&self) -> Result<Secret, String> {
        match &self.source {
            Source::Text(t) => Ok(Secret(t.clone().into_bytes())),
            Source::File(p) => {
                self.check_source()?;
                std::fs::read(p)
                    .map(Secret)
                    .map_err(|e| format!("key `{}`: cannot read {}: {e}", self.name, p.display()))
            }
            Source::Command(argv) => {
                let out = std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("key `{}`: cannot run `{}`: {e}", self.name, argv[0]))?;
                if !out.status.success() {
                    return Err(format!(
                        "key `{}`: `{}` exited with {}",
                        self.name,
                        argv.join(" "),
                        out.status
                    ));
                }
                Ok(Secret(out.stdout))
            }
        }
    }
}

/// Why a key file inside `/nix/store` is refused: the store is world-readable, and a secret
/// found there has already leaked (a `path:` flake, or a relative path in a flake, copies the
/// secret into the store before nixdeploy ever reads it).
fn in_nix_store(path: &std::path::Path) -> Option<String> {
    path.starts_with("/nix/store").then(|| {
        format!(
            "`file` {} is inside /nix/store, which every local user can read (a `path:` flake copies \
             its files there): keep secrets outside the flake and point `file` at their real location",
            path.display()
        )
    })
}

/// Parses an octal mode string (`"0600"`, `"640"`), at most `0777`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!(
            "`permissions` must be octal like \"0600\", found \"{text}\""
        ));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if mode > 0o777 {
        return Err(format!("`permissions` \"{text}\" is wider than 0777 (no setuid, setgid or sticky bits on keys)"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_in() {
        let k = KeySpec::parse(&json!({ "name": "app.key", "text": "s3cret" }), None).unwrap();
        assert_eq!(k.dest(), "/run/keys/app.key");
        assert_eq!(
            (k.user.as_str(), k.group.as_str(), k.permissions),
            ("root", "root", 0o600)
        );
        assert_eq!(k.upload_at, UploadAt::PreActivation);
    }

    #[test]
    fn inventory_camel_case_is_accepted() {
        let k = KeySpec::parse(&json!({ "keyFile": "/etc/hostname", "destDir": "/var/keys", "uploadAt": "post-activation" }), Some("db"))
            .unwrap();
        assert_eq!(k.dest(), "/var/keys/db");
        assert_eq!(k.upload_at, UploadAt::PostActivation);
    }

    #[test]
    fn bad_specs_are_rejected_with_reasons() {
        let cases = [
            (json!({ "name": "a/b", "text": "x" }), "plain file name"),
            (
                json!({ "name": "k", "text": "x", "dest_dir": "run/keys" }),
                "absolute",
            ),
            (
                json!({ "name": "k", "text": "x", "permissions": "0999" }),
                "octal",
            ),
            (
                json!({ "name": "k", "text": "x", "permissions": "4755" }),
                "wider than 0777",
            ),
            (
                json!({ "name": "k", "text": "x", "permissions": 600 }),
                "octal string",
            ),
            (json!({ "name": "k" }), "exactly one"),
            (
                json!({ "name": "k", "text": "x", "file": "/etc/hostname" }),
                "not several",
            ),
            (json!({ "name": "k", "command": [] }), "non-empty array"),
            (
                json!({ "name": "k", "text": "x", "upload_at": "later" }),
                "upload_at",
            ),
            (
                json!({ "name": "k", "text": "x", "user": "bad user" }),
                "valid account",
            ),
            (
                json!({ "name": "k", "text": "x", "colour": "red" }),
                "unknown field",
            ),
            (
                json!({ "name": "k", "file": "/nix/store/abc-secrets/k" }),
                "inside /nix/store",
            ),
            (
                json!({ "name": "k", "text": "x", "insecure_dest_dir": "yes" }),
                "true or false",
            ),
        ];
        for (spec, expected) in cases {
            let err = KeySpec::parse(&spec, None).unwrap_err();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let k = KeySpec::parse(&json!({ "name": "k", "text": "hunter2" }), None).unwrap();
        assert!(!format!("{k:?}").contains("hunter2"));
        assert!(!format!("{:?}", k.read().unwrap()).contains("hunter2"));
    }

    #[test]
    fn a_failing_command_is_an_error_without_its_output() {
        let k = KeySpec::parse(
            // The output (`42secret`) differs from the command line that produces it.
            &json!({ "name": "k", "command": ["sh", "-c", "echo $((6*7))secret; exit 3"] }),
            None,
        )
        .unwrap();
        let err = k.read().unwrap_err();
        assert!(err.contains("exited"), "{err}");
        assert!(!err.contains("42secret"), "{err}");
    }
}
