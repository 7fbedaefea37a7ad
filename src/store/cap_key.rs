//! What a cap counts: its scope, its period and the period's bucket (a
//! day, a month, a source, a phone's SMS window), the limit, and the period
//! arithmetic of daily and monthly caps in a time zone's local days. Plain
//! values: no shared memory, no SQL (the shared table is `cap_table.rs`,
//! the slots `caps.rs`).

use super::local_time::Zone;
use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// What a cap counts for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Scope {
    Rule = 1,
    GlobalRule = 2,
    Global = 3,
    /// A phone of a product (`ref_id`: a keyed digest of both): the SMS
    /// codes sent to it and the wrong codes tried for it, per window.
    Phone = 4,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Period {
    Daily = 1,
    Monthly = 2,
    Source = 3,
    /// `bucket`: the window's number (unix seconds / `iclear.sms_window`).
    SmsSent = 4,
    SmsFailed = 5,
}

/// One cap period: `bucket` is the period's first day (days since
/// 1970-01-01, UTC) for daily and monthly caps, the source id for a
/// per-source cap (`NO_SOURCE` for leads without one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CapKey {
    pub scope: Scope,
    pub period: Period,
    pub ref_id: i64,
    pub bucket: i64,
}

pub const NO_SOURCE: i64 = i64::MIN;

/// A cap to take a slot of.
#[derive(Clone, Copy, Debug)]
pub struct Cap {
    pub key: CapKey,
    pub limit: i64,
    /// When the period ends (unix seconds; 0 for a per-source cap, which
    /// never ends): past it, an idle entry may be dropped.
    pub ends: i64,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Rule => "rule",
            Scope::GlobalRule => "global_rule",
            Scope::Global => "global",
            Scope::Phone => "phone",
        }
    }
    pub(super) fn of(s: &str) -> Option<Scope> {
        Some(match s {
            "rule" => Scope::Rule,
            "global_rule" => Scope::GlobalRule,
            "global" => Scope::Global,
            "phone" => Scope::Phone,
            _ => return None,
        })
    }
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
            Period::Source => "source",
            Period::SmsSent => "sms_sent",
            Period::SmsFailed => "sms_failed",
        }
    }
    pub(super) fn of(s: &str) -> Option<Period> {
        Some(match s {
            "daily" => Period::Daily,
            "monthly" => Period::Monthly,
            "source" => Period::Source,
            "sms_sent" => Period::SmsSent,
            "sms_failed" => Period::SmsFailed,
            _ => return None,
        })
    }
}

pub(super) fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")
}

pub(super) fn day_number(d: NaiveDate) -> i64 {
    (d - epoch()).num_days()
}

impl CapKey {
    /// `bucket` as `cap_use.bucket` holds it: the period's first day
    /// (YYYY-MM-DD), or the source id ('' for none).
    pub fn bucket_text(&self) -> String {
        match self.period {
            Period::Source if self.bucket == NO_SOURCE => String::new(),
            Period::Source | Period::SmsSent | Period::SmsFailed => self.bucket.to_string(),
            _ => (epoch() + chrono::Duration::days(self.bucket))
                .format("%Y-%m-%d")
                .to_string(),
        }
    }

    pub fn parse(scope: &str, period: &str, ref_id: i64, bucket: &str) -> Option<CapKey> {
        let period = Period::of(period)?;
        let bucket = match period {
            Period::Source if bucket.is_empty() => NO_SOURCE,
            Period::Source | Period::SmsSent | Period::SmsFailed => bucket.parse().ok()?,
            _ => day_number(NaiveDate::parse_from_str(bucket, "%Y-%m-%d").ok()?),
        };
        Some(CapKey {
            scope: Scope::of(scope)?,
            period,
            ref_id,
            bucket,
        })
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1).expect("a month");
    (first_next - NaiveDate::from_ymd_opt(y, m, 1).expect("a month")).num_days() as u32
}

/// The reset day of month (y, m) for a monthly cap from `start_day` (a start
/// day past the month's end resets on its last day).
fn reset_in(y: i32, m: u32, start_day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, start_day.min(days_in_month(y, m))).expect("a day")
}

fn shift_month(y: i32, m: u32, by: i32) -> (i32, u32) {
    let n = y * 12 + m as i32 - 1 + by;
    (n.div_euclid(12), n.rem_euclid(12) as u32 + 1)
}

/// A daily or monthly cap period containing `now`, as (first local day,
/// end in unix seconds), in local days of `zone`: a period ends at local
/// midnight, whatever daylight-saving time does to the day's length.
/// Monthly periods start on `start_day` (1 for calendar months), as
/// `iclear.cap_period_start(.., time_zone)` computes them in SQL.
pub fn period_of(period: Period, start_day: u32, now: DateTime<Utc>, zone: Zone) -> (i64, i64) {
    let today = zone.date_of(now);
    match period {
        Period::Daily => (
            day_number(today),
            zone.midnight(today + chrono::Duration::days(1)),
        ),
        _ => {
            let (y, m) = (today.year(), today.month());
            let this = reset_in(y, m, start_day);
            let (start, next) = if today >= this {
                let (ny, nm) = shift_month(y, m, 1);
                (this, reset_in(ny, nm, start_day))
            } else {
                let (py, pm) = shift_month(y, m, -1);
                (reset_in(py, pm, start_day), this)
            };
            (day_number(start), zone.midnight(next))
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> i64 {
        day_number(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[pg_test]
    fn periods_match_cap_period_start() {
        // the SQL function and the Rust one agree on every case they share
        for (period, start, now) in [
            (Period::Daily, 1, "2026-12-01T23:59:59Z"),
            (Period::Monthly, 1, "2026-12-01T00:00:00Z"),
            (Period::Monthly, 15, "2026-11-14T12:00:00Z"),
            (Period::Monthly, 15, "2026-11-15T00:00:00Z"),
            (Period::Monthly, 31, "2026-03-01T00:00:00Z"),
            (Period::Monthly, 31, "2026-02-28T10:00:00Z"),
            (Period::Monthly, 30, "2027-01-05T10:00:00Z"),
        ] {
            let (first, _) = period_of(period, start, at(now), Zone::or_utc("UTC"));
            let sql: String = Spi::get_one(&format!(
                "SELECT (iclear.cap_period_start('{}', {start}, '{now}') AT TIME ZONE 'UTC')::date::text",
                period.name()
            ))
            .unwrap()
            .unwrap();
            assert_eq!(first, day(&sql), "{period:?} {start} {now}");
        }
        let utc = Zone::or_utc("UTC");
        let (first, ends) = period_of(Period::Monthly, 31, at("2026-02-28T10:00:00Z"), utc);
        assert_eq!(first, day("2026-02-28"));
        assert_eq!(ends, day("2026-03-31") * 86_400);
    }

    /// In a product's time zone, across both daylight-saving changes: the
    /// period's first local day and its end agree with SQL's.
    #[pg_test]
    fn local_periods_match_cap_period_start_in_a_time_zone() {
        let tz = "America/Los_Angeles";
        let zone = Zone::named(tz).unwrap();
        for (period, start, now) in [
            (Period::Daily, 1, "2026-03-08T07:59:59Z"),
            (Period::Daily, 1, "2026-03-08T08:00:00Z"),
            (Period::Daily, 1, "2026-03-09T06:59:59Z"),
            (Period::Daily, 1, "2026-03-09T07:00:00Z"),
            (Period::Daily, 1, "2026-11-01T07:30:00Z"),
            (Period::Daily, 1, "2026-11-02T07:59:59Z"),
            (Period::Daily, 1, "2026-11-02T08:00:00Z"),
            (Period::Monthly, 1, "2026-12-01T07:59:59Z"),
            (Period::Monthly, 1, "2026-12-01T08:00:00Z"),
            (Period::Monthly, 8, "2026-03-08T08:00:00Z"),
            (Period::Monthly, 31, "2026-03-01T07:00:00Z"),
        ] {
            let (first, ends) = period_of(period, start, at(now), zone);
            let (sql_first, sql_ends): (Option<String>, Option<i64>) = Spi::get_two(&format!(
                "SELECT (iclear.cap_period_start('{p}', {start}, '{now}', '{tz}') AT TIME ZONE '{tz}')::date::text,
                        extract(epoch FROM iclear.next_cap_reset('{p}', {start}, '{now}', '{tz}'))::int8",
                p = period.name()
            ))
            .unwrap();
            assert_eq!(first, day(&sql_first.unwrap()), "{period:?} {start} {now}");
            assert_eq!(ends, sql_ends.unwrap(), "{period:?} {start} {now}: the end");
        }
        // the day before spring-forward ends at 08:00 UTC, the day itself at 07:00
        let (_, ends) = period_of(Period::Daily, 1, at("2026-03-08T07:59:59Z"), zone);
        assert_eq!(ends, at("2026-03-08T08:00:00Z").timestamp());
        let (_, ends) = period_of(Period::Daily, 1, at("2026-03-08T08:00:00Z"), zone);
        assert_eq!(ends, at("2026-03-09T07:00:00Z").timestamp());
    }
}
