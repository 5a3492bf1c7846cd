//! The field tables of the migration guides, checked against the fields the readers handle:
//! a field the code reads that a table omits (or a table row the code does not know) fails.

use std::collections::BTreeSet;

use super::{colmena, deploy_rs};

const COLMENA_DOC: &str = include_str!("../../docs/migrating-from-colmena.md");
const DEPLOY_RS_DOC: &str = include_str!("../../docs/migrating-from-deploy-rs.md");

/// The backticked names in the first column of the doc's "Field mapping" table.
fn first_column(doc: &str) -> BTreeSet<String> {
    let table = doc
        .split("## Field mapping")
        .nth(1)
        .expect("the guide has a Field mapping section");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|row| row.split('|').nth(1))
        .filter_map(|cell| cell.trim().strip_prefix('`')?.split('`').next())
        .map(str::to_string)
        .collect()
}

fn assert_same(doc: &str, table: BTreeSet<String>, code: BTreeSet<String>) {
    let missing: Vec<_> = code.difference(&table).collect();
    let unknown: Vec<_> = table.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "{doc}: fields the code handles but the table omits: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "{doc}: table rows for fields the code does not handle: {unknown:?}"
    );
}

#[test]
fn the_colmena_guide_lists_every_field_the_reader_handles() {
    let code: BTreeSet<String> = colmena::DEPLOYMENT_FIELDS
        .iter()
        .map(|f| format!("deployment.{f}"))
        .chain(colmena::META_FIELDS.iter().map(|f| format!("meta.{f}")))
        .collect();
    assert_same(
        "docs/migrating-from-colmena.md",
        first_column(COLMENA_DOC),
        code,
    );
}

#[test]
fn the_deploy_rs_guide_lists_every_field_the_reader_handles() {
    let code: BTreeSet<String> = deploy_rs::GENERIC_FIELDS
        .iter()
        .chain(deploy_rs::TOP_FIELDS)
        .chain(deploy_rs::NODE_FIELDS)
        .chain(deploy_rs::PROFILE_FIELDS)
        .map(|f| f.to_string())
        .collect();
    assert_same(
        "docs/migrating-from-deploy-rs.md",
        first_column(DEPLOY_RS_DOC),
        code,
    );
}

#[test]
fn a_table_missing_a_field_is_caught() {
    let doc = "## Field mapping\n\n| a | b |\n|---|---|\n| `x` | y |\n";
    assert_eq!(first_column(doc), BTreeSet::from(["x".to_string()]));
    let result = std::panic::catch_unwind(|| {
        assert_same(
            "doc",
            first_column(doc),
            BTreeSet::from(["x".to_string(), "y".to_string()]),
        )
    });
    assert!(result.is_err(), "a field missing from the table must fail");
}
