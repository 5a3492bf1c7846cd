//! Typed reads from the evaluated inventory JSON, with errors that name the place and field.

use serde_json::{Map, Value};

use super::suggest;
use crate::exit::Failure;

/// An input error (exit code 4) about `what` (`host web-1`).
pub fn problem(what: &str, message: impl std::fmt::Display) -> anyhow::Error {
    Failure::input(format!("{what}: {message}")).into()
}

/// How a value reads in an error message: `a string`, `a list`, `a derivation`, ...
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(n) if n.as_i64().is_some_and(|i| i < 0) => "a negative integer",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(map) => match map.get("__nixdeploy").and_then(Value::as_str) {
            Some("derivation") => "a derivation",
            Some("function") => "a function",
            Some("deferred") => "a value not evaluated yet",
            Some("list") => "a list",
            _ => "an attribute set",
        },
    }
}

/// A marker object from `inventory.nix` for a derivation: (drv path, out path, system).
pub fn as_derivation(value: &Value) -> Option<(String, String, Option<String>)> {
    let map = value.as_object()?;
    if map.get("__nixdeploy")?.as_str()? != "derivation" {
        return None;
    }
    Some((
        map.get("drv")?.as_str()?.to_string(),
        map.get("out")?.as_str()?.to_string(),
        map.get("system")
            .and_then(Value::as_str)
            .map(str::to_string),
    ))
}

/// The fields of one evaluated attribute set, read with type checks.
pub struct Attrs<'a> {
    what: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Attrs<'a> {
    /// `value` must be a plain attribute set; `what` names it in errors (`host web-1`).
    pub fn new(what: &'a str, value: &'a Value) -> anyhow::Result<Self> {
        match value {
            Value::Object(map) if !map.contains_key("__nixdeploy") => Ok(Attrs { what, map }),
            other => Err(problem(
                what,
                format_args!("must be an attribute set, found {}", describe(other)),
            )),
        }
    }

    /// What this set is called in errors (`host web-1`).
    pub fn what(&self) -> &'a str {
        self.what
    }

    /// The field, unless it is missing or `null`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether the field is set (and not `null`).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.keys()
    }

    /// An error about field `key`.
    pub fn field_problem(&self, key: &str, message: impl std::fmt::Display) -> anyhow::Error {
        problem(self.what, format_args!("field {key} {message}"))
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> anyhow::Error {
        self.field_problem(
            key,
            format_args!("must be {expected}, found {}", describe(found)),
        )
    }

    /// An optional string field.
    pub fn string(&self, key: &str) -> anyhow::Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    /// An optional boolean field.
    pub fn boolean(&self, key: &str) -> anyhow::Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    /// An optional list-of-strings field.
    pub fn strings(&self, key: &str) -> anyhow::Result<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.field_problem(
                        key,
                        format_args!(
                            "must be a list of strings, found a list containing {}",
                            describe(other)
                        ),
                    )),
                })
                .collect::<anyhow::Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }

    /// An optional integer field in `min..=max`.
    pub fn integer(&self, key: &str, min: u64, max: u64) -> anyhow::Result<Option<u64>> {
        let expected = format!("an integer from {min} to {max}");
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
                Some(i) => Err(self.field_problem(
                    key,
                    format_args!("must be {expected}, found {i} (out of range)"),
                )),
                None => Err(self.wrong(key, &expected, v)),
            },
            Some(other) => Err(self.wrong(key, &expected, other)),
        }
    }

    /// An optional attribute-set field, as raw JSON values by name.
    pub fn object(&self, key: &str) -> anyhow::Result<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) if !map.contains_key("__nixdeploy") => Ok(Some(map)),
            Some(other) => Err(self.wrong(key, "an attribute set", other)),
        }
    }

    /// Rejects fields outside `allowed`, suggesting the closest allowed one.
    pub fn deny_unknown(&self, allowed: &[&str]) -> anyhow::Result<()> {
        self.deny_unknown_listing(allowed, allowed)
    }

    /// [`Attrs::deny_unknown`] where errors suggest and list only `shown` (fields nixdeploy
    /// adds itself are allowed but never suggested).
    pub fn deny_unknown_listing(&self, allowed: &[&str], shown: &[&str]) -> anyhow::Result<()> {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) {
                let mut message = format!("unknown field {key}");
                if let Some(near) = suggest::did_you_mean(key, shown.iter().copied()) {
                    message.push_str(&format!(" (did you mean {near}?)"));
                }
                message.push_str(&format!("; known fields: {}", shown.join(", ")));
                return Err(problem(self.what, message));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_errors_name_the_place_field_and_found_type() {
        let value = json!({ "tags": "web", "targetPort": 70000, "sshOptions": ["-v", 1] });
        let attrs = Attrs::new("host web-1", &value).unwrap();
        assert_eq!(
            attrs.strings("tags").unwrap_err().to_string(),
            "host web-1: field tags must be a list of strings, found a string"
        );
        assert_eq!(
            attrs.integer("targetPort", 1, 65535).unwrap_err().to_string(),
            "host web-1: field targetPort must be an integer from 1 to 65535, found 70000 (out of range)"
        );
        assert!(attrs
            .strings("sshOptions")
            .unwrap_err()
            .to_string()
            .ends_with("found a list containing an integer"));
    }

    #[test]
    fn markers_are_described_by_their_nix_type() {
        assert_eq!(
            describe(&json!({ "__nixdeploy": "function" })),
            "a function"
        );
        assert_eq!(describe(&json!(2.5)), "a float");
        assert_eq!(describe(&json!(-1)), "a negative integer");
        let drv =
            json!({ "__nixdeploy": "derivation", "drv": "/d.drv", "out": "/o", "system": null });
        assert_eq!(
            as_derivation(&drv),
            Some(("/d.drv".to_string(), "/o".to_string(), None))
        );
    }

    #[test]
    fn unknown_fields_get_a_suggestion() {
        let value = json!({ "targetPrt": 22 });
        let attrs = Attrs::new("host web-1", &value).unwrap();
        let err = attrs.deny_unknown(&["targetPort", "tags"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host web-1: unknown field targetPrt (did you mean targetPort?); known fields: targetPort, tags"
        );
    }
}
