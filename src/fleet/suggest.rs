//! "Did you mean" suggestions and short lists of known names for error messages.

/// How many known names an error message lists before it says how many more there are.
const LIST_LIMIT: usize = 12;

/// The known name closest to `wanted`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (wanted.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|candidate| (edit_distance(wanted, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `a, b, c` or `a, b, ... (5 more)`, or `none` for an empty list.
pub fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        return "none".to_string();
    }
    let mut text = names
        .iter()
        .take(LIST_LIMIT)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_LIMIT {
        text.push_str(&format!(", ... ({} more)", names.len() - LIST_LIMIT));
    }
    text
}

/// `unknown <kind> '<wanted>' (did you mean '<x>'?); known <kind>s: ...`.
pub fn unknown<'a>(
    kind: &str,
    wanted: &str,
    known: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let mut text = format!("unknown {kind} '{wanted}'");
    if let Some(near) = did_you_mean(wanted, known.clone()) {
        text.push_str(&format!(" (did you mean '{near}'?)"));
    }
    text.push_str(&format!("; known {kind}s: {}", list(known)));
    text
}

/// Edit distance over characters, where swapping two neighbours counts as one edit
/// (optimal string alignment, `strsim::osa_distance`), so `amr` is one typo away from `arm`.
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("web-1", "web-1"), 0);
        assert_eq!(edit_distance("web-1", "web-2"), 1);
        assert_eq!(edit_distance("web", "web-1"), 2);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("amr", "arm"), 1);
    }

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        let known = ["web-1", "web-2", "db-1"];
        assert_eq!(did_you_mean("web-9", known), Some("web-1"));
        assert_eq!(did_you_mean("bd-1", known), Some("db-1"));
        assert_eq!(did_you_mean("mail", known), None);
    }

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let names: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
        let text = list(names.iter().map(String::as_str));
        assert!(text.ends_with(", ... (8 more)"), "{text}");
        assert_eq!(list([]), "none");
    }

    #[test]
    fn unknown_names_the_kind_and_suggests() {
        let text = unknown("host", "web-9", ["web-1", "web-2"]);
        assert_eq!(
            text,
            "unknown host 'web-9' (did you mean 'web-1'?); known hosts: web-1, web-2"
        );
    }
}
