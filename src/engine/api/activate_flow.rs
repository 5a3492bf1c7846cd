//! How `activate` runs over a host's profiles: the profiles before the system, the system
//! (with the inventory's per-host settings), the profiles after it, and an optional reboot.

use std::sync::Arc;

use rhai::EvalAltResult;

use crate::fleet::Host;

/// The `activate` options the runbook gave, which win over the inventory's per-host ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Given {
    /// `magic_rollback`.
    pub magic_rollback: Option<bool>,
    /// `auto_rollback`.
    pub auto_rollback: Option<bool>,
    /// `confirm_timeout`.
    pub confirm_timeout: Option<std::time::Duration>,
    /// `activation_timeout`.
    pub activation_timeout: Option<std::time::Duration>,
}

/// Which of a host's profiles `activate` deals with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Which {
    /// The system and every other profile, in the host's order.
    All,
    /// Only the system profile.
    System,
    /// Only the named profile.
    Named(String),
}

impl Which {
    /// `profile` as the runbook gave it.
    pub(crate) fn parse(option: Option<String>) -> Result<Which, Box<EvalAltResult>> {
        Ok(match option.as_deref() {
            None | Some("all") => Which::All,
            Some("system") => Which::System,
            Some(name) => Which::Named(name.to_string()),
        })
    }

    /// A named profile must exist on every host it is asked of: an error (of the primitive
    /// `what`) before any host.
    pub(crate) fn check(&self, what: &str, hosts: &[Arc<Host>]) -> Result<(), Box<EvalAltResult>> {
        if let Which::Named(name) = self {
            for host in hosts {
                if !host.profiles.iter().any(|p| &p.name == name) {
                    let known = host.profiles.iter().map(|p| p.name.as_str());
                    return Err(format!(
                        "{what}: host {}: {}",
                        host.name,
                        crate::fleet::unknown_profile(name, known)
                    )
                    .into());
                }
            }
        }
        Ok(())
    }
}

/// What `activate` did on one host: the system (empty when untouched) and its other profiles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ActivatedHost {
    /// The system activation.
    #[serde(flatten)]
    pub system: crate::activation::Activated,
    /// The other profiles, in the order they were activated.
    pub profiles: Vec<crate::steps::ProfileActivated>,
    /// The reboot that followed, with `reboot: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebooted: Option<crate::steps::Rebooted>,
}

/// How long `reboot` waits for a host to come back unless told.
pub(crate) const REBOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `activate(..., #{ reboot: true })`: reboots the hosts whose activation succeeded and
/// records the reboot in their entries; a host that does not come back fails.
async fn reboot_after(
    ctx: &Arc<crate::context::Context>,
    results: Vec<crate::steps::HostResult<ActivatedHost>>,
    timeout: std::time::Duration,
) -> Vec<crate::steps::HostResult<ActivatedHost>> {
    let ok: Vec<Arc<Host>> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(h, _)| h.clone())
        .collect();
    let mut rebooted: std::collections::BTreeMap<String, Result<_, String>> =
        crate::steps::reboot(ctx, &ok, timeout)
            .await
            .into_iter()
            .map(|(h, r)| (h.name.to_string(), r))
            .collect();
    results
        .into_iter()
        .map(|(h, r)| {
            let r = match (r, rebooted.remove(h.name.as_str())) {
                (Ok(mut done), Some(Ok(b))) => {
                    done.value.rebooted = Some(b.value);
                    Ok(done)
                }
                (Ok(_), Some(Err(e))) => Err(e),
                (r, _) => r,
            };
            (h, r)
        })
        .collect()
}

/// `activate` as its options chose: the specialisation resolved on every host first (a host
/// without it fails before anything is switched), every host's profiles activated, then the
/// reboot when asked for.
pub(crate) async fn activate_chosen(
    ctx: &Arc<crate::context::Context>,
    mut items: Vec<(Arc<Host>, String)>,
    choice: &super::deploy_options::ActivateChoice,
) -> Vec<crate::steps::HostResult<ActivatedHost>> {
    let mut unknown = Vec::new();
    if let Some(name) = &choice.specialisation {
        let resolved = crate::steps::specialisation(ctx, items, name).await;
        items = Vec::new();
        for (host, r) in resolved {
            match r {
                Ok(o) => items.push((host, o.value)),
                Err(e) => unknown.push((host, Err(e))),
            }
        }
    }
    let mut results = activate_all(
        ctx,
        items,
        choice.base.clone(),
        choice.given.clone(),
        choice.which.clone(),
    )
    .await;
    results.extend(unknown);
    if choice.reboot {
        results = reboot_after(ctx, results, REBOOT_TIMEOUT).await;
    }
    results
}

/// Hosts whose system activation shares one set of options.
type SystemGroup = (crate::activation::ActivateOptions, Vec<(Arc<Host>, String)>);

type HostOutcome = Result<crate::steps::Outcome<ActivatedHost>, String>;

/// `activate` over every host: the profiles that come before the system, the system (grouped
/// by the inventory's rollback and timeout settings), then the profiles after it. A host whose
/// step fails takes no further step.
async fn activate_all(
    ctx: &Arc<crate::context::Context>,
    items: Vec<(Arc<Host>, String)>,
    base: crate::activation::ActivateOptions,
    given: Given,
    which: Which,
) -> Vec<crate::steps::HostResult<ActivatedHost>> {
    use crate::steps::{activate_profiles, Outcome, ProfileOptions};
    let mut state: std::collections::BTreeMap<String, HostOutcome> = items
        .iter()
        .map(|(h, p)| {
            let system = crate::activation::Activated {
                path: if h.has_system {
                    p.clone()
                } else {
                    String::new()
                },
                state: "unchanged".into(),
                ..Default::default()
            };
            let value = ActivatedHost {
                system,
                ..Default::default()
            };
            (
                h.name.to_string(),
                Ok(Outcome::skipped(value, "nothing to activate")),
            )
        })
        .collect();
    let popts = ProfileOptions {
        magic_rollback: given.magic_rollback,
        auto_rollback: given.auto_rollback,
        confirm_timeout: given.confirm_timeout,
        activation_timeout: given.activation_timeout,
    };
    let part = |before: bool| -> crate::steps::PickProfiles {
        let which = which.clone();
        Arc::new(move |h: &Host| {
            let (first, rest) = h.profiles.split_at(h.system_position.min(h.profiles.len()));
            let side = if before { first } else { rest };
            side.iter()
                .filter(|p| match &which {
                    Which::All => true,
                    Which::System => false,
                    Which::Named(n) => &p.name == n,
                })
                .cloned()
                .collect()
        })
    };
    let alive = |state: &std::collections::BTreeMap<String, HostOutcome>,
                 want: &dyn Fn(&Host) -> bool| {
        items
            .iter()
            .filter(|(h, _)| state.get(h.name.as_str()).is_some_and(|r| r.is_ok()) && want(h))
            .cloned()
            .collect::<Vec<_>>()
    };
    for before in [true, false] {
        if !before {
            // The system, between the two halves of the profiles.
            let wants_system = matches!(which, Which::All | Which::System);
            let mut groups: std::collections::BTreeMap<String, SystemGroup> = Default::default();
            for (h, p) in alive(&state, &|h| wants_system && h.has_system) {
                let o = for_host(&base, &given, &h);
                let key = format!("{o:?}");
                groups
                    .entry(key)
                    .or_insert_with(|| (o, Vec::new()))
                    .1
                    .push((h, p));
            }
            for (_, (o, group)) in groups {
                for (h, r) in crate::activation::activate(ctx, group, o).await {
                    let entry = state
                        .get_mut(h.name.as_str())
                        .expect("every host has a state");
                    *entry = r.map(|out| Outcome {
                        value: ActivatedHost {
                            system: out.value,
                            ..Default::default()
                        },
                        state: out.state,
                        message: out.message,
                    });
                }
            }
        }
        let pick = part(before);
        let hosts: Vec<Arc<Host>> = alive(&state, &|h| !pick(h).is_empty())
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        if hosts.is_empty() {
            continue;
        }
        for (h, r) in activate_profiles(ctx, &hosts, pick, popts.clone()).await {
            let entry = state
                .get_mut(h.name.as_str())
                .expect("every host has a state");
            *entry = match (entry.clone(), r) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                (Ok(mut so_far), Ok(done)) => {
                    let changed = done.state != crate::report::StepState::Skipped;
                    so_far.value.profiles.extend(done.value);
                    if changed && so_far.state == crate::report::StepState::Skipped {
                        so_far.state = done.state;
                    }
                    so_far.message = match (so_far.message, done.message) {
                        (Some(a), Some(b)) if so_far.state != crate::report::StepState::Skipped => {
                            Some(format!("{a}; {b}"))
                        }
                        (a, b) => b.or(a),
                    };
                    Ok(so_far)
                }
            };
        }
    }
    items
        .into_iter()
        .map(|(h, _)| {
            let r = state
                .remove(h.name.as_str())
                .unwrap_or_else(|| Err("not activated".into()));
            (h, r)
        })
        .collect()
}

/// The system's activate options for one host: the runbook's, else the inventory's, else the
/// built-in defaults.
fn for_host(
    base: &crate::activation::ActivateOptions,
    given: &Given,
    host: &Host,
) -> crate::activation::ActivateOptions {
    let inv = &host.activate_defaults;
    let mut o = base.clone();
    if given.magic_rollback.is_none() {
        if let Some(m) = inv.magic_rollback {
            o.magic_rollback = m;
        }
    }
    if given.confirm_timeout.is_none() {
        if let Some(t) = inv.confirm_timeout {
            o.confirm_timeout = std::time::Duration::from_secs(t);
        }
    }
    if given.activation_timeout.is_none() {
        if let Some(t) = inv.activation_timeout {
            o.activation_timeout = std::time::Duration::from_secs(t);
        }
    }
    o
}
