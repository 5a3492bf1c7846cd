//! Reading a primitive's options map: known keys only, each with its expected type.

use rhai::{Dynamic, EvalAltResult, Map};

use super::fail;

/// An options map being read; unknown keys are rejected by [`Options::finish`].
pub struct Options<'a> {
    what: &'a str,
    map: Map,
    known: Vec<&'static str>,
}

impl<'a> Options<'a> {
    /// Starts reading `map` for the primitive `what`.
    pub fn new(what: &'a str, map: Map) -> Self {
        Options {
            what,
            map,
            known: Vec::new(),
        }
    }

    /// The primitive whose options these are (errors start with it).
    pub fn what(&self) -> &str {
        self.what
    }

    fn take(&mut self, key: &'static str) -> Option<Dynamic> {
        self.known.push(key);
        self.map.get(key).cloned().filter(|v| !v.is_unit())
    }

    /// A boolean option.
    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>, Box<EvalAltResult>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .or_else(|_| self.wrong(key, "a bool (true or false)", &v)),
        }
    }

    /// A string option.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, Box<EvalAltResult>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) if v.is_string() => Ok(v.into_string().ok()),
            Some(v) => self.wrong(key, "a string", &v),
        }
    }

    /// A number of seconds (integer or decimal, not negative).
    pub fn seconds(
        &mut self,
        key: &'static str,
    ) -> Result<Option<std::time::Duration>, Box<EvalAltResult>> {
        let secs = match self.take(key) {
            None => return Ok(None),
            Some(v) if v.is_int() => v.as_int().unwrap_or(0) as f64,
            Some(v) if v.is_float() => v.as_float().unwrap_or(0.0),
            Some(v) => return self.wrong(key, "a number of seconds", &v),
        };
        if !(0.0..=86_400.0 * 7.0).contains(&secs) {
            return fail(format!(
                "{}: option `{key}` must be between 0 and 604800 seconds, found {secs}",
                self.what
            ));
        }
        Ok(Some(std::time::Duration::from_secs_f64(secs)))
    }

    /// Any value, checked by the caller.
    pub fn raw(&mut self, key: &'static str) -> Option<Dynamic> {
        self.take(key)
    }

    fn wrong<T>(
        &self,
        key: &str,
        expected: &str,
        found: &Dynamic,
    ) -> Result<T, Box<EvalAltResult>> {
        fail(format!(
            "{}: option `{key}` must be {expected}, found {}",
            self.what,
            found.type_name()
        ))
    }

    /// Rejects keys nobody asked for (typos such as `magic_rolback`).
    pub fn finish(self) -> Result<(), Box<EvalAltResult>> {
        let unknown: Vec<&str> = self
            .map
            .keys()
            .map(|k| k.as_str())
            .filter(|k| !self.known.contains(k))
            .collect();
        if let Some(k) = unknown.first() {
            return fail(format!(
                "{}: unknown option `{k}`; known options: {}",
                self.what,
                self.known.join(", ")
            ));
        }
        Ok(())
    }
}
