//! The inventory's `cache` field: a binary cache the deployer pushes to once and the hosts
//! substitute from (see `docs/binary-cache.md`).

use std::path::PathBuf;

use serde_json::Value;

use super::value::Attrs;

const FIELDS: &[&str] = &["push", "url", "publicKey", "signingKeyFile"];

/// A binary cache as the inventory declares it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BinaryCache {
    /// Where the deployer pushes: any store URL `nix copy --to` accepts (`s3://…`, `file://…`).
    pub push: String,
    /// Where the hosts substitute from (defaults to `push`).
    pub url: String,
    /// The cache's public key, `NAME:BASE64`, trusted by the hosts for this call only.
    pub public_key: String,
    /// The secret key the deployer signs with, a file outside the Nix store; `None` when the
    /// cache signs what it receives itself.
    pub signing_key_file: Option<PathBuf>,
}

impl BinaryCache {
    /// Reads `cache = { push; url; publicKey; signingKeyFile; }`; `what` names the set that
    /// holds it (`host web-1`, `nixdeploy.defaults`).
    pub fn read(what: &str, value: &Value) -> anyhow::Result<BinaryCache> {
        let place = format!("{what}, field cache");
        let attrs = Attrs::new(&place, value)?;
        attrs.deny_unknown(FIELDS)?;
        let push = attrs
            .string("push")?
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                attrs.field_problem(
                    "push",
                    "is missing: the store URL to push to, e.g. \"s3://bucket?region=eu-west-1\"",
                )
            })?;
        let url = attrs.string("url")?.unwrap_or_else(|| push.clone());
        if url.is_empty() {
            return Err(attrs.field_problem("url", "must not be empty"));
        }
        let public_key = attrs.string("publicKey")?.ok_or_else(|| {
            attrs.field_problem(
                "publicKey",
                "is missing: the cache's public key, NAME:BASE64 (from nix-store --generate-binary-cache-key)",
            )
        })?;
        check_public_key(&public_key).map_err(|why| attrs.field_problem("publicKey", why))?;
        let signing_key_file = match attrs.string("signingKeyFile")? {
            None => None,
            Some(path) => Some(
                check_key_file(&path).map_err(|why| attrs.field_problem("signingKeyFile", why))?,
            ),
        };
        Ok(BinaryCache {
            push,
            url,
            public_key,
            signing_key_file,
        })
    }
}

/// `NAME:BASE64` where BASE64 is a 32-byte ed25519 public key.
fn check_public_key(key: &str) -> Result<(), String> {
    match key.split_once(':') {
        Some((name, b64)) if !name.is_empty() && b64.len() == 44 && b64.ends_with('=') => Ok(()),
        _ => Err(format!(
            "must be NAME:BASE64 as nix-store --generate-binary-cache-key writes it, found '{key}'"
        )),
    }
}

/// An absolute path outside the Nix store: a key inside the flake would be copied into the
/// world-readable store.
fn check_key_file(path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "must be an absolute path string, found '{path}' (write it as a string, not a Nix path, so the key stays out of the store)"
        ));
    }
    if path.starts_with("/nix/store/") {
        return Err(format!(
            "is in the Nix store ({path}), where every user can read it; keep the secret key in a file outside the flake and give its path as a string"
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "sb-1:vWRv1eF5Pyvrlwuc30R7HHx1cgAsTqoBekPKiAK0DDI=";

    #[test]
    fn the_substitute_url_defaults_to_the_push_url() {
        let c = BinaryCache::read(
            "nixdeploy.defaults",
            &json!({ "push": "s3://b", "publicKey": KEY }),
        )
        .unwrap();
        assert_eq!(c.url, "s3://b");
        assert_eq!(c.signing_key_file, None);
    }

    #[test]
    fn a_signing_key_in_the_store_is_refused() {
        let e = BinaryCache::read(
            "host h1",
            &json!({ "push": "file:///c", "publicKey": KEY, "signingKeyFile": "/nix/store/abc-src/key" }),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("host h1, field cache: field signingKeyFile is in the Nix store"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_push_url_or_malformed_key_is_named() {
        let e = BinaryCache::read("host h1", &json!({ "publicKey": KEY }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field push is missing"), "{e}");
        let e = BinaryCache::read("host h1", &json!({ "push": "s3://b", "publicKey": "oops" }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field publicKey must be NAME:BASE64"), "{e}");
        let e = BinaryCache::read(
            "host h1",
            &json!({ "push": "s3://b", "publicKey": KEY, "pushUrl": 1 }),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pushUrl"), "{e}");
    }
}
