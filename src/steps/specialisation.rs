//! Resolving a NixOS specialisation (`$toplevel/specialisation/<name>`) on each host before
//! anything is switched: an unknown name fails the host with the names it has.

use std::sync::Arc;

use anyhow::bail;

use super::{fan_out_paths, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::Host;
use crate::transport::quote;

/// What the probe prints when the specialisation is missing, before the names it found.
const MISSING: &str = "@@nixdeploy-no-specialisation";

/// Resolves specialisation `name` of each host's system to its own toplevel store path.
pub async fn specialisation(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    name: &str,
) -> Vec<HostResult<String>> {
    let c = ctx.clone();
    let name = name.to_string();
    fan_out_paths(ctx, items, "specialisation", move |host, path| {
        let (ctx, name) = (c.clone(), name.clone());
        async move {
            let conn = ctx.pool.get(&ctx.target(&host)).await?;
            let out = conn.run(&probe_command(&path, &name), None).await?;
            let resolved = parse(&out.stdout, &path, &name)?;
            Ok(Outcome::done(resolved.clone()).with_message(format!("{name}: {resolved}")))
        }
    })
    .await
}

/// Prints the resolved specialisation toplevel, or the marker and the names there are.
pub fn probe_command(path: &str, name: &str) -> String {
    format!(
        "p={p}; s={s}; if [ -x \"$p/specialisation/$s/bin/switch-to-configuration\" ]; then \
         readlink -f \"$p/specialisation/$s\"; else echo {MISSING}; ls \"$p/specialisation\" 2>/dev/null; fi",
        p = quote(path),
        s = quote(name),
    )
}

fn parse(stdout: &str, path: &str, name: &str) -> anyhow::Result<String> {
    let mut lines = stdout.lines().filter(|l| !l.is_empty());
    match lines.next() {
        Some(MISSING) => {
            let known: Vec<&str> = lines.collect();
            bail!(
                "{}; nothing was switched",
                crate::fleet::unknown_specialisation(name, path, known)
            )
        }
        Some(resolved) if resolved.starts_with("/nix/store/") => Ok(resolved.to_string()),
        _ => bail!("could not read specialisation '{name}' of {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_valid_shell_and_names_what_there_is() {
        crate::transport::assert_valid_shell(&probe_command("/nix/store/a b", "x'y"));
        assert_eq!(
            parse("/nix/store/abc-spec\n", "/p", "alt").unwrap(),
            "/nix/store/abc-spec"
        );
        let err = parse(&format!("{MISSING}\nalt\nrescue\n"), "/nix/store/t", "alts")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown specialisation 'alts' of /nix/store/t (did you mean 'alt'?)"),
            "{err}"
        );
        assert!(err.contains("known specialisations: alt, rescue"), "{err}");
    }
}
