//! A run killed outright (SIGKILL) still leaves a journal record for every host it finished:
//! hosts are journalled as they finish, not only when the run ends.

mod common;

use std::time::Duration;

use common::background::BackgroundRun;
use common::{eventually, runbook, Sandbox};

#[test]
fn a_sigkilled_run_leaves_a_record_for_every_host_it_finished() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    let book = runbook(
        &sb,
        "kill-me.rhai",
        r#"
for name in ["h1", "h2"] {
    let done = activate(copy(build(host(name))));
    if !done.ok { throw `${name} did not deploy`; }
}
exec(host("h3"), "touch /run/killed-here; sleep 120");
"#,
    );
    let run = BackgroundRun::start(&sb, &book, &["--json"]);
    let marker = sb.host_root("h3").join("run/killed-here");
    let reached = eventually(Duration::from_secs(120), || marker.exists());
    run.kill(); // SIGKILL: no handler, no summary, no final journal write
    assert!(reached, "the run never reached h3");

    let log = sb.nixdeploy(&["log", "--json"]).output();
    log.assert_success();
    let records = log.json_lines();
    let state_of = |host: &str| {
        records
            .iter()
            .find(|r| r["host"] == host)
            .map(|r| r["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state_of("h1").as_deref(), Some("deployed"), "{records:#?}");
    assert_eq!(state_of("h2").as_deref(), Some("deployed"), "{records:#?}");
    assert_eq!(state_of("h3"), None, "h3 never finished: {records:#?}");
    for host in ["h1", "h2"] {
        let r = records.iter().find(|r| r["host"] == host).unwrap();
        assert_eq!(
            r["path_after"].as_str(),
            Some(sb.build_toplevel(host).as_str()),
            "{r}"
        );
        assert_eq!(r["progress"], true, "written as {host} finished: {r}");
    }
    let table = sb.nixdeploy(&["log"]).output();
    table.assert_success();
    assert!(
        table.stdout.contains("h1") && table.stdout.contains("h2"),
        "{table}"
    );
}
