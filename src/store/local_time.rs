//! Local days in a time zone, with PostgreSQL's own zone data (the one
//! `AT TIME ZONE` uses), so that the caps counted here and the periods the
//! views compute in SQL (`iclear.cap_period_start(.., time_zone)`) agree,
//! daylight-saving changes included.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use pgrx::pg_sys;
use std::ffi::CString;

/// A time zone PostgreSQL knows. PostgreSQL keeps every zone it loads for
/// the life of the backend, so the pointer stays valid.
#[derive(Clone, Copy)]
pub struct Zone(*mut pg_sys::pg_tz);

impl Zone {
    /// The zone of this IANA name, or None when PostgreSQL does not know it
    /// (the configuration tables refuse such a name; a zone removed from
    /// the system's data since is read as UTC by the caller).
    pub fn named(name: &str) -> Option<Zone> {
        let c = CString::new(name).ok()?;
        // SAFETY: pg_tzset reads a NUL-terminated name and returns a zone it
        // keeps, or NULL; it raises no ERROR.
        let tz = unsafe { pg_sys::pg_tzset(c.as_ptr()) };
        (!tz.is_null()).then_some(Zone(tz))
    }

    /// The named zone, UTC when it cannot be found.
    pub fn or_utc(name: &str) -> Zone {
        Zone::named(name)
            .or_else(|| Zone::named("UTC"))
            .expect("PostgreSQL knows UTC")
    }

    /// The local date at `at`.
    pub fn date_of(self, at: DateTime<Utc>) -> NaiveDate {
        let t: pg_sys::pg_time_t = at.timestamp();
        // SAFETY: pg_localtime reads the time and the zone, and returns a
        // pointer to a static struct (or NULL), copied out at once.
        let tm = unsafe { pg_sys::pg_localtime(&t, self.0).as_ref() };
        match tm {
            Some(tm) => NaiveDate::from_ymd_opt(
                tm.tm_year + 1900,
                (tm.tm_mon + 1) as u32,
                tm.tm_mday as u32,
            )
            .unwrap_or_else(|| at.date_naive()),
            None => at.date_naive(),
        }
    }

    /// When local midnight starting `day` is, in unix seconds. (Where a
    /// daylight-saving change skips midnight, PostgreSQL's reading of the
    /// missing time, as `AT TIME ZONE` reads it.)
    pub fn midnight(self, day: NaiveDate) -> i64 {
        // SAFETY: a zeroed pg_tm is a valid value; DetermineTimeZoneOffset
        // reads the date fields (PostgreSQL's convention: the full year,
        // months from 1) and the zone, and may set tm_isdst.
        let mut tm: pg_sys::pg_tm = unsafe { std::mem::zeroed() };
        tm.tm_year = day.year();
        tm.tm_mon = day.month() as i32;
        tm.tm_mday = day.day() as i32;
        // seconds west of UTC at that local time
        let west = unsafe { pg_sys::DetermineTimeZoneOffset(&mut tm, self.0) };
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
        (day - epoch).num_days() * 86_400 + i64::from(west)
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

    #[pg_test]
    fn local_days_follow_daylight_saving() {
        let la = Zone::named("America/Los_Angeles").unwrap();
        assert!(Zone::named("Mars/Olympus_Mons").is_none());
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // 23:59:59 on 7 March (PST) and the first second of 8 March
        assert_eq!(la.date_of(at("2026-03-08T07:59:59Z")), d("2026-03-07"));
        assert_eq!(la.date_of(at("2026-03-08T08:00:00Z")), d("2026-03-08"));
        assert_eq!(
            la.midnight(d("2026-03-08")),
            at("2026-03-08T08:00:00Z").timestamp()
        );
        // the spring-forward day is 23 hours long, the fall-back day 25
        assert_eq!(
            la.midnight(d("2026-03-09")) - la.midnight(d("2026-03-08")),
            23 * 3600
        );
        assert_eq!(
            la.midnight(d("2026-11-02")) - la.midnight(d("2026-11-01")),
            25 * 3600
        );
        let utc = Zone::or_utc("UTC");
        assert_eq!(utc.date_of(at("2026-03-08T07:59:59Z")), d("2026-03-08"));
        assert_eq!(
            utc.midnight(d("2026-03-08")),
            at("2026-03-08T00:00:00Z").timestamp()
        );
    }
}
