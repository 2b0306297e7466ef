//! The policy table's words: a schedule and a retention as a person reads them.

use tidemark_service_core::{Retention, Source, SourceKind, format_duration};

/// How often `source` is backed up, e.g. `"daily at 01:00 Asia/Kolkata (0 1 * * *), window 1h"`.
pub fn frequency(source: &Source) -> String {
    let schedule = &source.schedule;
    let mut text =
        format!("{} {} ({})", cron_words(schedule.expression()), schedule.time_zone(), schedule.expression());
    if let Some(w) = source.window {
        text.push_str(&format!(", window {}", format_duration(w)));
    }
    text
}

/// A cron expression in words where the common shapes allow, else `"on cron schedule"`.
pub fn cron_words(expression: &str) -> String {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if let [nick] = fields.as_slice() {
        return match nick.to_ascii_lowercase().as_str() {
            "@hourly" => "hourly at minute 0".into(),
            "@daily" | "@midnight" => "daily at 00:00".into(),
            "@weekly" => "weekly on Sunday at 00:00".into(),
            "@monthly" => "monthly on day 1 at 00:00".into(),
            "@yearly" | "@annually" => "yearly on 1 January at 00:00".into(),
            _ => "on cron schedule".into(),
        };
    }
    let [minute, hour, dom, month, dow] = fields.as_slice() else {
        return "on cron schedule".into();
    };
    let number = |s: &str| s.parse::<u32>().ok();
    let step = |s: &str| s.strip_prefix("*/").and_then(|n| n.parse::<u32>().ok());
    let at = |h: u32, m: u32| format!("{h:02}:{m:02}");
    match (number(minute), number(hour), *dom, *month, *dow) {
        (Some(m), Some(h), "*", "*", "*") => format!("daily at {}", at(h, m)),
        (Some(m), Some(h), "*", "*", d) if day_name(d).is_some() => {
            format!("weekly on {} at {}", day_name(d).unwrap_or_default(), at(h, m))
        }
        (Some(m), Some(h), d, "*", "*") if number(d).is_some() => {
            format!("monthly on day {} at {}", number(d).unwrap_or_default(), at(h, m))
        }
        (Some(m), None, "*", "*", "*") if *hour == "*" => format!("hourly at minute {m}"),
        (Some(m), None, "*", "*", "*") if step(hour).is_some() => {
            format!("every {} hours at minute {m}", step(hour).unwrap_or_default())
        }
        (None, None, "*", "*", "*") if step(minute).is_some() && *hour == "*" => {
            format!("every {} minutes", step(minute).unwrap_or_default())
        }
        _ => "on cron schedule".into(),
    }
}

fn day_name(field: &str) -> Option<&'static str> {
    const NAMES: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    if let Ok(n) = field.parse::<usize>() {
        return NAMES.get(n % 7).copied();
    }
    let lower = field.to_ascii_lowercase();
    NAMES.iter().copied().find(|n| n.to_ascii_lowercase().starts_with(&lower) && lower.len() == 3)
}

/// The retention promised, e.g. `"14 daily, 8 weekly, 6 monthly, 1 yearly"`.
pub fn retention(retention: Option<&Retention>) -> String {
    let Some(r) = retention else {
        return "every snapshot kept".into();
    };
    let mut parts = Vec::new();
    let counts = [
        (r.last, "last"),
        (r.hourly, "hourly"),
        (r.daily, "daily"),
        (r.weekly, "weekly"),
        (r.monthly, "monthly"),
        (r.yearly, "yearly"),
    ];
    for (n, word) in counts {
        if let Some(n) = n {
            parts.push(format!("{n} {word}"));
        }
    }
    if let Some(w) = r.within {
        parts.push(format!("all within {}", format_duration(w)));
    }
    parts.join(", ")
}

/// How a source is backed up.
pub fn method(kind: &SourceKind) -> &'static str {
    match kind {
        SourceKind::Directory { .. } => "directory snapshots",
        SourceKind::Bucket { .. } => "bucket snapshots",
        SourceKind::Postgres { .. } => "base backups",
        _ => "snapshots",
    }
}

/// The config spelling of a source's kind.
pub fn kind_name(kind: &SourceKind) -> &'static str {
    match kind {
        SourceKind::Directory { .. } => "directory",
        SourceKind::Bucket { .. } => "bucket",
        SourceKind::Postgres { .. } => "postgres",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_cron_shapes_read_as_words() {
        assert_eq!(cron_words("0 1 * * *"), "daily at 01:00");
        assert_eq!(cron_words("30 3 * * 0"), "weekly on Sunday at 03:30");
        assert_eq!(cron_words("30 3 * * MON"), "weekly on Monday at 03:30");
        assert_eq!(cron_words("0 2 1 * *"), "monthly on day 1 at 02:00");
        assert_eq!(cron_words("15 * * * *"), "hourly at minute 15");
        assert_eq!(cron_words("0 */6 * * *"), "every 6 hours at minute 0");
        assert_eq!(cron_words("*/15 * * * *"), "every 15 minutes");
        assert_eq!(cron_words("@daily"), "daily at 00:00");
        assert_eq!(cron_words("0 1-5 * * *"), "on cron schedule");
    }

    #[test]
    fn retention_reads_like_the_promise() {
        let r =
            Retention { daily: Some(14), weekly: Some(8), monthly: Some(6), yearly: Some(1), ..Retention::default() };
        assert_eq!(retention(Some(&r)), "14 daily, 8 weekly, 6 monthly, 1 yearly");
        assert_eq!(retention(None), "every snapshot kept");
        let r = Retention { within: Some(jiff::SignedDuration::from_hours(14 * 24)), ..Retention::default() };
        assert!(retention(Some(&r)).starts_with("all within "), "{}", retention(Some(&r)));
    }
}
