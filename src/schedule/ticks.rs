//! Which tick of a schedule is due. tokio-cron-scheduler only wakes the
//! daemon; the fire times are computed here, in the schedule's zone, at
//! every wake-up, so DST and missed ticks are handled explicitly.
use chrono::{DateTime, Utc};

use crate::config::{Missed, Schedule};

/// A tick no later than this behind `now` is on time; older ones were missed.
pub const ON_TIME_MS: i64 = 3_000;
/// Fire times examined at most per wake-up (a per-second schedule after a day down).
const MAX_STEPS: usize = 200_000;

/// The tick to run for a schedule whose ticks up to `since` were handled:
/// the latest fire time in `(since, now]` if it is on time, or, when all of
/// them were missed, the latest one under `missed = "run_once"`.
pub fn due(schedule: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut latest = None;
    let mut t = since;
    for _ in 0..MAX_STEPS {
        match schedule.next_after(t) {
            Some(next) if next.with_timezone(&Utc) <= now => {
                t = next.with_timezone(&Utc);
                latest = Some(t);
            }
            _ => break,
        }
    }
    let latest = latest?;
    let on_time = (now - latest).num_milliseconds() <= ON_TIME_MS;
    (on_time || schedule.missed == Missed::RunOnce).then_some(latest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap()
    }

    #[test]
    fn an_on_time_tick_is_due_once() {
        let s = Schedule::parse("*/5 * * * *", chrono_tz::UTC, Missed::Skip).unwrap();
        assert_eq!(due(&s, at(10, 4, 0), at(10, 5, 1)), Some(at(10, 5, 0)));
        assert_eq!(due(&s, at(10, 5, 1), at(10, 5, 2)), None);
    }

    #[test]
    fn missed_ticks_run_once_or_are_skipped() {
        let once = Schedule::parse("*/5 * * * *", chrono_tz::UTC, Missed::RunOnce).unwrap();
        let skip = Schedule::parse("*/5 * * * *", chrono_tz::UTC, Missed::Skip).unwrap();
        // Down from 10:00 to 10:17: ticks 10:05, 10:10, 10:15 were missed.
        assert_eq!(due(&once, at(10, 0, 0), at(10, 17, 0)), Some(at(10, 15, 0)));
        assert_eq!(due(&skip, at(10, 0, 0), at(10, 17, 0)), None);
        // Back just after a tick: that one is on time for both.
        assert_eq!(due(&skip, at(10, 0, 0), at(10, 20, 1)), Some(at(10, 20, 0)));
    }

    fn utc_hours(s: &Schedule, from: DateTime<Utc>, n: usize) -> Vec<String> {
        s.upcoming(from, n)
            .iter()
            .map(|t| t.with_timezone(&Utc).format("%m-%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn dst_in_prague_both_directions() {
        let s = Schedule::parse("30 2 * * *", chrono_tz::Europe::Prague, Missed::Skip).unwrap();
        // Spring forward 2026-03-29: 02:30 does not exist that day.
        let spring = utc_hours(&s, Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap(), 3);
        assert_eq!(spring[0], "03-28 01:30");
        assert_eq!(
            spring[2], "03-30 00:30",
            "CEST from the 30th: 02:30 local is 00:30 UTC"
        );
        // Fall back 2026-10-25: 02:30 happens twice; it runs once.
        let fall = utc_hours(&s, Utc.with_ymd_and_hms(2026, 10, 23, 12, 0, 0).unwrap(), 3);
        assert_eq!(fall[0], "10-24 00:30");
        assert_eq!(
            fall.iter().filter(|t| t.starts_with("10-25")).count(),
            1,
            "{fall:?}"
        );
        assert_eq!(fall[2], "10-26 01:30", "CET after the change");
    }

    #[test]
    fn dst_in_new_york_both_directions() {
        let s = Schedule::parse("0 9 * * *", chrono_tz::America::New_York, Missed::Skip).unwrap();
        let spring = utc_hours(&s, Utc.with_ymd_and_hms(2026, 3, 7, 18, 0, 0).unwrap(), 2);
        assert_eq!(
            spring,
            ["03-08 13:00", "03-09 13:00"],
            "EDT from 2026-03-08: 09:00 is 13:00 UTC"
        );
        let fall = utc_hours(&s, Utc.with_ymd_and_hms(2026, 10, 31, 18, 0, 0).unwrap(), 2);
        assert_eq!(
            fall,
            ["11-01 14:00", "11-02 14:00"],
            "EST from 2026-11-01: 09:00 is 14:00 UTC"
        );
    }
}
