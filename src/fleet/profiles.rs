//! Profiles besides the system one: the native `profiles` field, default profile paths, and
//! the deploy order (`profilesOrder`).

use serde_json::{Map, Value};

use super::inventory::{Profile, ProfileKind};
use super::schema::{read_activate, read_system_field, ACTIVATE_FIELDS};
use super::suggest;
use super::value::{problem, Attrs};

/// The fields of one native profile (`nixdeploy.hosts.<h>.profiles.<p>`).
pub const PROFILE_FIELDS: &[&str] = &["path", "kind", "user", "profilePath", "command", "activate"];

/// The name the system profile has in `profilesOrder`.
pub const SYSTEM_NAME: &str = "system";

/// Where a profile lives unless it says: `/nix/var/nix/profiles/<name>` for root,
/// `/nix/var/nix/profiles/per-user/<user>/<name>` for anyone else.
pub fn default_profile_path(name: &str, user: &str) -> String {
    if user == "root" {
        format!("/nix/var/nix/profiles/{name}")
    } else {
        format!("/nix/var/nix/profiles/per-user/{user}/{name}")
    }
}

/// Checks a profile name: it becomes a file name in the profiles directory.
pub fn check_profile_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(problem(
            what,
            format_args!(
                "profile name '{name}' must be letters, digits, '-', '_' or '.' (not first)"
            ),
        ))
    }
}

/// Reads the native `profiles` set of host `host_what`.
pub fn read_native(host_what: &str, profiles: &Map<String, Value>) -> anyhow::Result<Vec<Profile>> {
    let mut out = Vec::new();
    for (name, value) in profiles {
        let what = format!("{host_what}, profile {name}");
        check_profile_name(&what, name)?;
        if name == SYSTEM_NAME {
            return Err(problem(
                &what,
                "the system profile is the host's own toplevel; set toplevel (and profile) on the host instead",
            ));
        }
        let attrs = Attrs::new(&what, value)?;
        attrs.deny_unknown(PROFILE_FIELDS)?;
        let toplevel = read_system_field(
            &what,
            "path",
            attrs.get("path"),
            "no path: set path to the derivation (or store path) the profile points at",
        )?;
        let kind = match attrs.string("kind")?.as_deref() {
            None | Some("custom") => ProfileKind::Custom,
            Some("home-manager") => ProfileKind::HomeManager,
            Some(other) => {
                return Err(attrs.field_problem(
                    "kind",
                    format_args!("must be \"custom\" or \"home-manager\", found \"{other}\""),
                ))
            }
        };
        let user = attrs.string("user")?.unwrap_or_else(|| "root".to_string());
        let command = match (attrs.string("command")?, &kind) {
            (Some(c), _) => c,
            (None, ProfileKind::HomeManager) => "$PROFILE/activate".to_string(),
            (None, ProfileKind::Custom) => {
                return Err(attrs.field_problem(
                    "command",
                    "is missing: a custom profile says how it is activated, e.g. command = \"$PROFILE/bin/activate\"",
                ))
            }
        };
        let profile_path = attrs
            .string("profilePath")?
            .unwrap_or_else(|| default_profile_path(name, &user));
        if !profile_path.starts_with('/') {
            return Err(attrs.field_problem(
                "profilePath",
                format_args!("must be an absolute path, found '{profile_path}'"),
            ));
        }
        let defaults = match attrs.get("activate") {
            None => Default::default(),
            Some(v) => {
                let what = format!("{what}, field activate");
                let a = Attrs::new(&what, v)?;
                a.deny_unknown(ACTIVATE_FIELDS)?;
                read_activate(&a)?
            }
        };
        out.push(Profile {
            name: name.clone(),
            kind,
            drv_path: toplevel.drv_path,
            out_path: toplevel.out_path,
            profile_path,
            user,
            activate: command,
            defaults,
        });
    }
    Ok(out)
}

/// Puts `profiles` in deploy order: the names of `order` first, in that order, then the rest
/// by name. Returns the profiles and the position of the system profile among them.
pub fn in_order(
    what: &str,
    mut profiles: Vec<Profile>,
    has_system: bool,
    order: Option<&[String]>,
) -> anyhow::Result<(Vec<Profile>, usize)> {
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    let mut names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    if has_system {
        names.insert(0, SYSTEM_NAME);
    }
    let mut ordered: Vec<String> = Vec::new();
    for name in order.unwrap_or_default() {
        if !names.contains(&name.as_str()) {
            let mut message = format!("profilesOrder names unknown profile '{name}'");
            if let Some(near) = suggest::did_you_mean(name, names.iter().copied()) {
                message.push_str(&format!(" (did you mean '{near}'?)"));
            }
            message.push_str(&format!("; profiles: {}", suggest::list(names.clone())));
            return Err(problem(what, message));
        }
        if ordered.contains(name) {
            return Err(problem(
                what,
                format_args!("profilesOrder names profile '{name}' twice"),
            ));
        }
        ordered.push(name.clone());
    }
    for name in &names {
        if !ordered.iter().any(|o| o == name) {
            ordered.push(name.to_string());
        }
    }
    // Its index among all names is how many other profiles go before it.
    let system_position = ordered.iter().position(|n| n == SYSTEM_NAME).unwrap_or(0);
    let mut sorted = Vec::with_capacity(profiles.len());
    for name in ordered.iter().filter(|n| n.as_str() != SYSTEM_NAME) {
        let at = profiles.iter().position(|p| &p.name == name).unwrap_or(0);
        sorted.push(profiles.remove(at));
    }
    Ok((sorted, system_position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> Profile {
        Profile {
            name: name.into(),
            kind: ProfileKind::Custom,
            drv_path: String::new(),
            out_path: format!("/nix/store/{name}"),
            profile_path: default_profile_path(name, "root"),
            user: "root".into(),
            activate: "true".into(),
            defaults: Default::default(),
        }
    }

    fn names(ps: &[Profile]) -> Vec<&str> {
        ps.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn profiles_order_comes_first_and_the_rest_follow_by_name() {
        let all = vec![profile("myapp"), profile("home"), profile("zz")];
        let order = ["home".to_string(), "system".to_string()];
        let (ps, system) = in_order("deploy.nodes.a", all, true, Some(&order)).unwrap();
        assert_eq!(names(&ps), ["home", "myapp", "zz"]);
        assert_eq!(system, 1, "system comes after home");
        let (ps, system) = in_order("x", vec![profile("b"), profile("a")], true, None).unwrap();
        assert_eq!((names(&ps), system), (vec!["a", "b"], 0));
    }

    #[test]
    fn unknown_names_in_profiles_order_are_errors_with_a_suggestion() {
        let order = ["myap".to_string()];
        let err = in_order("deploy.nodes.a", vec![profile("myapp")], true, Some(&order))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "deploy.nodes.a: profilesOrder names unknown profile 'myap' (did you mean 'myapp'?); profiles: system, myapp"
        );
    }

    #[test]
    fn per_user_profiles_live_under_per_user() {
        assert_eq!(
            default_profile_path("home", "alice"),
            "/nix/var/nix/profiles/per-user/alice/home"
        );
        assert_eq!(
            default_profile_path("myapp", "root"),
            "/nix/var/nix/profiles/myapp"
        );
    }
}
