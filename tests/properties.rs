//! Property tests: the selector parser and the inventory readers never panic on any input,
//! and every word the shared quoting helper produces reads back unchanged through a real `sh`.

use proptest::prelude::*;
use serde_json::{json, Value};

use nixdeploy::fleet::selector::Selector;
use nixdeploy::fleet::Inventory;
use nixdeploy::transport::quote;

/// Arbitrary JSON, a few levels deep, biased towards the inventory's own field names.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("hosts".to_string()),
        Just("defaults".to_string()),
        Just("builders".to_string()),
        Just("toplevel".to_string()),
        Just("targetHost".to_string()),
        Just("targetPort".to_string()),
        Just("tags".to_string()),
        Just("keys".to_string()),
        Just("buildOn".to_string()),
        Just("sshOptions".to_string()),
        Just("nodes".to_string()),
        Just("profiles".to_string()),
        Just("system".to_string()),
        Just("path".to_string()),
        Just("drvPath".to_string()),
        Just("outPath".to_string()),
        Just("type".to_string()),
        Just("__nixdeploy".to_string()),
        Just("maxJobs".to_string()),
        Just("systems".to_string()),
        Just("sshConfig".to_string()),
        "[a-zA-Z0-9_.,!@* -]{0,8}",
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!("derivation")),
        Just(
            json!({ "__nixdeploy": "derivation", "drv": "/nix/store/00000000000000000000000000000000-a.drv", "out": "/nix/store/00000000000000000000000000000000-a" })
        ),
        Just(json!("/nix/store/2raac275ma78k0yqv8kcydpsdj8cqn6h-x")),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Selector-shaped text: the characters selectors use, plus anything.
fn selector_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9@*?!,\\[\\]. -]{0,24}",
        any::<String>(),
        "(@?[a-z]{1,5}[*?]?)(,!?@?[a-z]{1,5}[*?]?){0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_selector_parser_never_panics_and_locates_every_error(input in selector_text()) {
        match Selector::parse(&input) {
            Ok(selector) => prop_assert_eq!(selector.source(), input.as_str()),
            Err(err) => {
                prop_assert!(err.column >= 1);
                prop_assert!(err.column <= input.chars().count() + 1, "{err}");
                prop_assert!(!err.message.is_empty());
                // Rendering the caret line must not panic either.
                let _ = err.to_string();
            }
        }
    }

    #[test]
    fn selecting_from_a_real_inventory_never_panics(input in selector_text()) {
        let drv = |name: &str| json!({
            "__nixdeploy": "derivation",
            "drv": format!("/nix/store/00000000000000000000000000000000-{name}.drv"),
            "out": format!("/nix/store/00000000000000000000000000000000-{name}"),
            "system": "x86_64-linux",
        });
        let inv = Inventory::from_json("path:/nonexistent", json!({
            "source": "nixdeploy",
            "value": { "hosts": {
                "web-1": { "toplevel": drv("web-1"), "tags": ["web", "canary"] },
                "db-1": { "toplevel": drv("db-1"), "tags": ["db"] }
            } }
        }));
        prop_assert!(inv.is_ok(), "{:?}", inv.err());
        if let (Ok(inv), Ok(selector)) = (inv, Selector::parse(&input)) {
            let _ = selector.select(&inv);
        }
    }

    #[test]
    fn the_inventory_readers_never_panic_on_any_json(
        source in prop_oneof![Just("nixdeploy".to_string()), Just("deploy".to_string()), Just("nixos".to_string()), any::<String>()],
        value in json_value(),
    ) {
        let _ = Inventory::from_json("path:/nonexistent", json!({ "source": source, "value": value }));
        let _ = Inventory::from_json("path:/nonexistent", value);
    }

    #[test]
    fn quoted_words_read_back_unchanged_through_a_real_sh(word in any::<String>()) {
        // A shell argument cannot hold a NUL byte; everything else must survive.
        let word = word.replace('\0', "");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(&word)))
            .output()
            .unwrap();
        prop_assert!(out.status.success());
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout).into_owned(), word);
    }

    /// The form the brief names: `sh -c 'printf %s "$1"' _ <quoted>` with the quoted word
    /// spliced into a script, as remote commands are.
    #[test]
    fn quoted_words_survive_as_positional_arguments(word in "(?s).{0,64}") {
        let word = word.replace('\0', "");
        let script = format!("sh -c 'printf %s \"$1\"' _ {}", quote(&word));
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        prop_assert!(out.status.success(), "{script}");
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout).into_owned(), word);
    }
}
