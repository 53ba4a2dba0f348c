//! Cron expressions: crontab(5)'s five fields, `minute hour day-of-month month day-of-week`,
//! evaluated in UTC, for jobs that must run at set times of day rather than every N seconds.
//!
//! Kept here, beside the other validated values, because the configuration refuses a bad
//! expression with its reason and the scheduler computes the next run from the same parse.
//! Written rather than taken from a crate: the grammar is small, UTC has no daylight-saving
//! gaps or repeats, and the calendar crates the cron crates bring are not needed otherwise.
//!
//! The grammar is Vixie cron's: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n` (and
//! `a/n`, from `a` to the field's end), lists with `,`, month and weekday names (`jan`,
//! `mon`), weekday 7 for Sunday, and the `@hourly` … `@yearly` shorthands. As in crontab(5),
//! when both day fields are restricted (neither starts with `*`), a day matching either runs.

use crate::time::civil_from_days;
use std::fmt;

/// One of the five fields, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    /// Minute, 0–59.
    Minute,
    /// Hour, 0–23.
    Hour,
    /// Day of the month, 1–31.
    DayOfMonth,
    /// Month, 1–12 or `jan`–`dec`.
    Month,
    /// Day of the week, 0–7 (0 and 7 are Sunday) or `sun`–`sat`.
    DayOfWeek,
}

impl CronField {
    const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            CronField::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }

    /// The value of the first name (`jan` is 1, `sun` is 0).
    fn first_named(self) -> u32 {
        match self {
            CronField::Month => 1,
            _ => 0,
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        })
    }
}

/// Why a cron expression was refused; each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not five fields (nor a known `@` shorthand).
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week), or one of @hourly \
         @daily @weekly @monthly @yearly; found {found} field(s)"
    )]
    FieldCount {
        /// Fields found.
        found: usize,
    },
    /// An `@` word that is not a shorthand.
    #[error("unknown shorthand {0:?}; known: @hourly @daily @midnight @weekly @monthly @yearly @annually")]
    UnknownShorthand(String),
    /// A value that is neither a number nor a name of the field.
    #[error("{field} field: {value:?} is not a number{names}")]
    NotANumber {
        /// The field.
        field: CronField,
        /// What was written.
        value: String,
        /// ", nor a name like jan" where the field has names.
        names: &'static str,
    },
    /// A number outside the field's range.
    #[error("{field} field: {value} is outside {min}-{max}")]
    OutOfRange {
        /// The field.
        field: CronField,
        /// The number.
        value: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// A range whose start is after its end.
    #[error("{field} field: range {start}-{end} runs backwards; write the smaller value first")]
    BackwardsRange {
        /// The field.
        field: CronField,
        /// Its start.
        start: u32,
        /// Its end.
        end: u32,
    },
    /// A step that is zero or not a number.
    #[error("{field} field: step {step:?} must be a whole number of at least 1")]
    BadStep {
        /// The field.
        field: CronField,
        /// What followed `/`.
        step: String,
    },
    /// Days that no month has, such as `30 2` (February 30th).
    #[error("never fires: day-of-month {days:?} does not occur in month {months:?}")]
    NeverFires {
        /// The month field as written.
        months: String,
        /// The day-of-month field as written.
        days: String,
    },
}

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    /// One bit per allowed value, indexed like [`CronField::ALL`].
    allowed: [u64; 5],
    /// Day-of-month and day-of-week written as `*…`: then the other alone decides.
    dom_star: bool,
    dow_star: bool,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Days searched for a next run: past the eight years between two February 29ths
/// across a century that skips its leap year (2096 to 2104).
const SEARCH_DAYS: i64 = 366 * 9;

impl CronExpr {
    /// Parses an expression; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(CronError::UnknownShorthand(text.to_owned()))
            }
            _ => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount {
                found: fields.len(),
            });
        }
        let mut allowed = [0u64; 5];
        for (slot, (field, spec)) in CronField::ALL.iter().zip(&fields).enumerate() {
            allowed[slot] = parse_field(*field, spec)?;
        }
        // Sunday is 0 and 7.
        if allowed[4] & (1 << 7) != 0 {
            allowed[4] = (allowed[4] | 1) & !(1 << 7);
        }
        let expr = CronExpr {
            text: text.to_owned(),
            allowed,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
        };
        // With a weekday to fall back on, some day always matches; otherwise a
        // day of the month must exist in one of the months (February has 29).
        let either_day = !expr.dom_star && !expr.dow_star;
        let possible = (1..=12u32).any(|month| {
            expr.has(3, month) && (1..=days_in_month_max(month)).any(|day| expr.has(2, day))
        });
        if !either_day && !possible {
            return Err(CronError::NeverFires {
                months: fields[3].to_owned(),
                days: fields[2].to_owned(),
            });
        }
        Ok(expr)
    }

    fn has(&self, slot: usize, value: u32) -> bool {
        self.allowed[slot] & (1 << value) != 0
    }

    fn day_matches(&self, days_since_epoch: i64) -> bool {
        let (_, month, day) = civil_from_days(days_since_epoch);
        if !self.has(3, month) {
            return false;
        }
        let weekday = (days_since_epoch + 4).rem_euclid(7) as u32;
        let (dom, dow) = (self.has(2, day), self.has(4, weekday));
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first whole minute strictly after `unix_secs` that matches, in Unix seconds (UTC).
    /// `None` only when no match lies within the next nine years, which [`CronExpr::parse`]
    /// rules out for every expression it accepts.
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let start = (unix_secs.div_euclid(60) + 1) * 60;
        let first_day = start.div_euclid(86_400);
        let mut first_minute = (start.rem_euclid(86_400) / 60) as u32;
        for day in first_day..first_day + SEARCH_DAYS {
            if self.day_matches(day) {
                for minute_of_day in first_minute..1440 {
                    if self.has(1, minute_of_day / 60) && self.has(0, minute_of_day % 60) {
                        return Some(day * 86_400 + i64::from(minute_of_day) * 60);
                    }
                }
            }
            first_minute = 0;
        }
        None
    }
}

fn days_in_month_max(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse_field(field: CronField, spec: &str) -> Result<u64, CronError> {
    let (min, max) = field.bounds();
    let mut bits = 0u64;
    for item in spec.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let parsed = step.parse::<u32>().ok().filter(|&s| s >= 1);
                let Some(step) = parsed else {
                    return Err(CronError::BadStep {
                        field,
                        step: step.to_owned(),
                    });
                };
                (base, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if base == "*" {
            (min, max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (start, end) = (value(field, a)?, value(field, b)?);
            if start > end {
                return Err(CronError::BackwardsRange { field, start, end });
            }
            (start, end)
        } else {
            let start = value(field, base)?;
            // `a/n` runs from a to the end of the field, as in Vixie cron.
            (start, if step.is_some() { max } else { start })
        };
        let step = step.unwrap_or(1) as usize;
        for v in (start..=end).step_by(step) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

fn value(field: CronField, text: &str) -> Result<u32, CronError> {
    let (min, max) = field.bounds();
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names().iter().position(|n| *n == lower) {
        return Ok(field.first_named() + i as u32);
    }
    let Ok(v) = text.parse::<u32>() else {
        return Err(CronError::NotANumber {
            field,
            value: text.to_owned(),
            names: match field {
                CronField::Month => ", nor a month name like jan",
                CronField::DayOfWeek => ", nor a day name like mon",
                _ => "",
            },
        });
    };
    if v < min || v > max {
        return Err(CronError::OutOfRange {
            field,
            value: v,
            min,
            max,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 11:33:00 UTC, a Tuesday.
    const TUE_1133: i64 = 1_796_124_780;

    fn next(expr: &str, after: i64) -> i64 {
        CronExpr::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(1_835_395_200 / 86_400), (2028, 2, 29));
        assert_eq!(civil_from_days(1_798_761_600 / 86_400), (2027, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn next_runs() {
        // Every minute: the next whole minute, strictly after.
        assert_eq!(next("* * * * *", TUE_1133), TUE_1133 + 60);
        assert_eq!(next("* * * * *", TUE_1133 + 1), TUE_1133 + 60);
        assert_eq!(next("* * * * *", TUE_1133 - 1), TUE_1133);
        // Daily at 03:00: tomorrow, since today's has passed.
        assert_eq!(next("0 3 * * *", TUE_1133), 1_796_180_400);
        assert_eq!(next("@daily", TUE_1133), 1_796_180_400 - 3 * 3600);
        // Sunday (0 and 7 and the name) at midnight.
        for sunday in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "@weekly"] {
            assert_eq!(next(sunday, TUE_1133), 1_796_515_200, "{sunday}");
        }
        // Last minute of the year, then New Year across the boundary.
        assert_eq!(next("59 23 31 12 *", TUE_1133), 1_798_761_540);
        assert_eq!(next("@yearly", TUE_1133), 1_798_761_600);
        // February 29th: the next leap day, and the one after it.
        assert_eq!(next("0 0 29 2 *", TUE_1133), 1_835_395_200);
        assert_eq!(next("0 0 29 feb *", 1_835_395_200), 1_961_625_600);
        // Steps and lists: */15 from 11:33 is 11:45; 5,50 is 11:50.
        assert_eq!(next("*/15 * * * *", TUE_1133), TUE_1133 + 12 * 60);
        assert_eq!(next("5,50 * * * *", TUE_1133), TUE_1133 + 17 * 60);
        assert_eq!(next("10-20/5 12 * * *", TUE_1133), TUE_1133 + 37 * 60);
        assert_eq!(next("40/10 * * * *", TUE_1133), TUE_1133 + 7 * 60);
        // Both day fields restricted: either matches (the 6th, a Sunday, or any Wednesday).
        assert_eq!(next("0 0 6 * wed", TUE_1133), 1_796_169_600);
        // Day-of-week written with a star step: both must match (crontab(5)).
        assert_eq!(next("0 0 6 * */1", TUE_1133), 1_796_515_200);
    }

    #[test]
    fn refusals_say_why() {
        let err = |e: &str| CronExpr::parse(e).unwrap_err();
        assert_eq!(err("0 3 * *"), CronError::FieldCount { found: 4 });
        assert_eq!(err(""), CronError::FieldCount { found: 0 });
        assert!(matches!(err("@often"), CronError::UnknownShorthand(_)));
        assert!(matches!(
            err("x * * * *"),
            CronError::NotANumber {
                field: CronField::Minute,
                ..
            }
        ));
        assert!(matches!(
            err("0 24 * * *"),
            CronError::OutOfRange {
                field: CronField::Hour,
                value: 24,
                ..
            }
        ));
        assert!(matches!(
            err("0 0 0 * *"),
            CronError::OutOfRange {
                field: CronField::DayOfMonth,
                ..
            }
        ));
        assert!(matches!(
            err("0 0 * 13 *"),
            CronError::OutOfRange {
                field: CronField::Month,
                ..
            }
        ));
        assert!(matches!(
            err("0 0 * * 8"),
            CronError::OutOfRange {
                field: CronField::DayOfWeek,
                ..
            }
        ));
        assert!(matches!(
            err("0 0 * * fri-mon"),
            CronError::BackwardsRange { .. }
        ));
        assert!(matches!(err("*/0 * * * *"), CronError::BadStep { .. }));
        assert!(matches!(err("*/x * * * *"), CronError::BadStep { .. }));
        assert!(matches!(err("0 0 30 2 *"), CronError::NeverFires { .. }));
        assert!(matches!(err("0 0 31 4,6 *"), CronError::NeverFires { .. }));
        // With a weekday beside it, the impossible day is only one of two chances.
        assert!(CronExpr::parse("0 0 30 2 mon").is_ok());
        let message = err("0 3 * *").to_string();
        assert!(message.contains("expected 5 fields"), "{message}");
    }
}
