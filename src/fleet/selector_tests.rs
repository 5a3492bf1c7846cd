//! Unit tests of selector parsing and matching.

use super::*;
use crate::fleet::testing::inventory;

fn fleet() -> Inventory {
    inventory(&[
        ("db-1", &["db", "db-primary"]),
        ("db-2", &["db", "db-replica"]),
        ("web-1", &["web", "canary"]),
        ("web-2", &["web"]),
        ("web-3", &["web"]),
    ])
}

fn names(selector: &str) -> Vec<String> {
    Selector::parse(selector)
        .unwrap()
        .select(&fleet())
        .unwrap()
        .iter()
        .map(|h| h.name.to_string())
        .collect()
}

fn parse_error(selector: &str) -> SelectorError {
    Selector::parse(selector).expect_err(selector)
}

fn select_error(selector: &str) -> String {
    let err = Selector::parse(selector)
        .unwrap()
        .select(&fleet())
        .expect_err(selector);
    assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Input);
    err.to_string()
}

#[test]
fn a_name_selects_that_host() {
    assert_eq!(names("web-2"), ["web-2"]);
}

#[test]
fn globs_select_matching_names_in_inventory_order() {
    assert_eq!(names("web-*"), ["web-1", "web-2", "web-3"]);
    assert_eq!(names("db-?"), ["db-1", "db-2"]);
    assert_eq!(names("web-[13]"), ["web-1", "web-3"]);
    assert_eq!(names("web-[!13]"), ["web-2"]);
}

#[test]
fn tags_and_tag_globs_select_hosts_that_carry_them() {
    assert_eq!(names("@canary"), ["web-1"]);
    assert_eq!(names("@db-*"), ["db-1", "db-2"]);
}

#[test]
fn commas_unite_and_keep_inventory_order() {
    assert_eq!(names("web-3, db-1 ,@canary"), ["db-1", "web-1", "web-3"]);
    assert_eq!(names("web-1,web-1"), ["web-1"]);
}

#[test]
fn exclusions_remove_from_the_union() {
    assert_eq!(names("@web,!web-3"), ["web-1", "web-2"]);
    assert_eq!(names("!web-3,@web"), ["web-1", "web-2"]);
    assert_eq!(names("*,!@db"), ["web-1", "web-2", "web-3"]);
}

#[test]
fn only_exclusions_means_all_hosts_minus_those() {
    assert_eq!(names("!@web"), ["db-1", "db-2"]);
    assert_eq!(names("!web-*, !db-1"), ["db-2"]);
}

#[test]
fn matches_works_on_single_hosts() {
    let inv = fleet();
    let selector = Selector::parse("@web,!web-3").unwrap();
    assert!(selector.matches(inv.get("web-1").unwrap()));
    assert!(!selector.matches(inv.get("web-3").unwrap()));
    assert!(!selector.matches(inv.get("db-1").unwrap()));
}

#[test]
fn empty_selector_is_rejected_at_column_one() {
    for input in ["", "   "] {
        let err = parse_error(input);
        assert_eq!(err.column, 1);
        assert!(err.message.contains("empty"), "{err}");
    }
}

#[test]
fn empty_items_are_rejected_where_they_are() {
    assert_eq!(parse_error("web-1,,web-2").column, 7);
    assert_eq!(parse_error(",web-1").column, 1);
    let trailing = parse_error("web-1,");
    assert_eq!(trailing.column, 7);
    assert!(trailing.message.contains("trailing"), "{trailing}");
    assert_eq!(parse_error("web-1, ,web-2").column, 8);
}

#[test]
fn lone_sigils_are_rejected() {
    let at = parse_error("web-1,@");
    assert_eq!(at.column, 7);
    assert!(at.message.contains("'@' must be followed"), "{at}");
    let bang = parse_error(" !");
    assert_eq!(bang.column, 2);
    assert!(bang.message.contains("'!' must be followed"), "{bang}");
    assert_eq!(parse_error("!@").column, 2);
}

#[test]
fn double_exclusion_is_rejected() {
    let err = parse_error("!!web-1");
    assert_eq!(err.column, 2);
    assert!(err.message.contains("'!!'"), "{err}");
}

#[test]
fn invalid_characters_are_rejected_with_their_column() {
    let space = parse_error("web 1");
    assert_eq!(space.column, 4);
    assert!(space.message.contains("whitespace"), "{space}");
    assert_eq!(parse_error("web/1").column, 4);
    assert_eq!(parse_error("web-1;web-2").column, 6);
    assert_eq!(parse_error("web-{1,2}").column, 5);
    assert_eq!(parse_error("wéb").column, 2);
    assert_eq!(parse_error("web@1").column, 4);
    assert_eq!(parse_error("web!").column, 4);
    assert_eq!(parse_error("@web 1").column, 5);
}

#[test]
fn brackets_must_balance_and_hold_something() {
    let open = parse_error("web-[12");
    assert_eq!(open.column, 5);
    assert!(open.message.contains("never closed"), "{open}");
    assert_eq!(parse_error("web-]").column, 5);
    assert!(parse_error("web-[]")
        .message
        .contains("empty character class"));
    assert_eq!(parse_error("web-[1 ]").column, 7);
}

#[test]
fn names_must_start_with_a_letter_or_digit() {
    assert_eq!(parse_error("-web").column, 1);
    assert_eq!(parse_error("!.web").column, 2);
}

#[test]
fn parse_errors_render_the_input_and_a_caret() {
    let text = parse_error("web-1,,web-2").to_string();
    assert_eq!(
        text,
        "invalid selector 'web-1,,web-2' at column 7: empty item before ','; remove the extra ','\n  web-1,,web-2\n        ^"
    );
}

#[test]
fn an_unknown_name_lists_known_hosts_with_a_suggestion() {
    let err = select_error("web-9");
    assert!(
        err.contains("unknown host 'web-9' (did you mean 'web-1'?)"),
        "{err}"
    );
    assert!(
        err.contains("known hosts: db-1, db-2, web-1, web-2, web-3"),
        "{err}"
    );
    assert!(select_error("@web,!web-9").contains("unknown host 'web-9'"));
}

#[test]
fn an_unknown_tag_lists_known_tags() {
    let err = select_error("@canry");
    assert!(
        err.contains("unknown tag 'canry' (did you mean 'canary'?)"),
        "{err}"
    );
    assert!(err.contains("known tags: canary, db, db-primary"), "{err}");
}

#[test]
fn globs_that_match_nothing_say_so() {
    assert!(select_error("mail-*").contains("'mail-*' matches no host"));
    assert!(select_error("@mail-*").contains("'@mail-*' matches no tag"));
}

#[test]
fn excluding_everything_is_an_error() {
    let err = select_error("@web,!web-*");
    assert!(err.contains("selects no host"), "{err}");
}
