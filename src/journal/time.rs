//! RFC 3339 UTC timestamps, with the calendar arithmetic left to the `time` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// `time` as RFC 3339 in UTC with whole seconds (`2024-05-01T12:34:56Z`).
/// Times before 1970 are clamped to the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn the_epoch_is_1970_01_01() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn known_instants_format_exactly() {
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_714_566_896), "2024-05-01T12:34:56Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
