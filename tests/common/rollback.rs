//! What the rollback tests share: a deployed baseline for the hosts to go back to, and the wait
//! for a host to be back on it.

use std::fmt::Display;
use std::time::Duration;

use super::{eventually, run, runbook, Sandbox};

/// Deploys the fleet as it is (`baseline.rhai`, failing on any host that fails) and returns the
/// system each of `hosts` runs afterwards, in order.
pub fn deploy_baseline(sb: &Sandbox, hosts: &[&str]) -> Vec<String> {
    let book = runbook(
        sb,
        "baseline.rhai",
        "let r = activate(copy(build(hosts())));\nif !r.ok { throw `baseline failed on ${r.failed}`; }",
    );
    let out = run(sb, &book, &[]);
    out.assert_success();
    hosts
        .iter()
        .map(|h| {
            sb.current_system(h)
                .unwrap_or_else(|| panic!("{h} runs no system: {out}"))
        })
        .collect()
}

/// Polls until `host` runs `system` again and panics if it does not within `limit`, naming what
/// it runs instead; `context` (the run's output, or why the limit) ends the message.
pub fn assert_back_on(
    sb: &Sandbox,
    host: &str,
    system: &str,
    limit: Duration,
    context: impl Display,
) {
    let back = eventually(limit, || sb.current_system(host).as_deref() == Some(system));
    assert!(
        back,
        "{host} did not return to {system} within {limit:?}, it runs {:?}: {context}",
        sb.current_system(host)
    );
}

/// After a generation that cut `host` off: within `limit` it runs `system` again, its profile
/// names `system`, and it answers ssh again; `context` (the run's output) ends the messages.
pub fn assert_rolled_back_and_answering(
    sb: &Sandbox,
    host: &str,
    system: &str,
    limit: Duration,
    context: impl Display,
) {
    assert_back_on(sb, host, system, limit, &context);
    assert_eq!(
        sb.profile_target(host).as_deref(),
        Some(system),
        "{host}'s profile: {context}"
    );
    assert!(
        sb.ssh(host, "true").status.success(),
        "{host} does not answer ssh again: {context}"
    );
}

/// The usual start of a rollback test: brings up `hosts` sandbox hosts (`h1`…), deploys them as
/// they are ([`deploy_baseline`]) and then gives every one a new, not yet deployed generation
/// with `behavior` ([`Sandbox::set_behavior`]). Returns the sandbox and what each host ran
/// before, in order.
pub fn deployed_then_set_behavior(hosts: usize, behavior: &str) -> (Sandbox, Vec<String>) {
    let sb = Sandbox::up(hosts);
    let names: Vec<String> = (1..=hosts).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = deploy_baseline(&sb, &names);
    sb.set_behavior_on(&names, behavior);
    (sb, before)
}
