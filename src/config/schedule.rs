//! Cron schedules: 5 fields with standard cron (and Kubernetes) meaning, where
//! day-of-month and day-of-week are ORed; 6 fields add seconds first. Fire
//! times are computed in the schedule's IANA zone at every tick, so DST holds.
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    Skip,
    RunOnce,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as the user wrote it.
    pub expression: String,
    pub timezone: Tz,
    pub missed: Missed,
    /// `verify = "<cron>"`: when the daemon verifies the job's target, in
    /// the same zone (a missed verify is skipped).
    pub verify: Option<Box<Schedule>>,
    cron: Cron,
}

impl Schedule {
    pub fn parse(expression: &str, timezone: Tz, missed: Missed) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        let mut cron = Cron::new(expression);
        match fields {
            5 => {}
            6 => {
                cron.with_seconds_required();
            }
            n => {
                return Err(format!(
                    "cron expression `{expression}` has {n} fields; use 5 (minute hour day month weekday) or 6 (seconds first)"
                ))
            }
        }
        let cron = cron
            .parse()
            .map_err(|e| format!("invalid cron expression `{expression}`: {e}"))?;
        Ok(Schedule {
            expression: expression.to_string(),
            timezone,
            missed,
            verify: None,
            cron,
        })
    }

    /// The first fire time strictly after `after`, in the schedule's zone.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .ok()
    }

    /// Whether the schedule fires at least once within `years` after `after`.
    pub fn fires_within(&self, after: DateTime<Utc>, years: i32) -> bool {
        let horizon = after + chrono::Duration::days(365 * i64::from(years) + 2);
        self.next_after(after)
            .is_some_and(|t| t.with_timezone(&Utc) <= horizon)
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    t = next.with_timezone(&Utc);
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_fields_or_day_of_month_with_day_of_week() {
        // 13th of the month OR any Friday, as standard cron means it.
        let s = Schedule::parse("0 0 13 * 5", chrono_tz::UTC, Missed::RunOnce).unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let days: Vec<u32> = s
            .upcoming(from, 3)
            .iter()
            .map(chrono::Datelike::day)
            .collect();
        assert_eq!(days, vec![6, 13, 20]);
    }

    #[test]
    fn six_fields_have_seconds_and_zones_honour_dst() {
        let s = Schedule::parse("30 0 9 * * *", chrono_tz::Europe::Prague, Missed::Skip).unwrap();
        let before_dst_end = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        let next: Vec<String> = s
            .upcoming(before_dst_end, 2)
            .iter()
            .map(|t| t.with_timezone(&Utc).format("%d %H:%M:%S").to_string())
            .collect();
        // 09:00:30 Prague is 07:00:30 UTC in summer time and 08:00:30 after it ends.
        assert_eq!(next, vec!["25 08:00:30", "26 08:00:30"]);
        let first = Utc.with_ymd_and_hms(2026, 10, 23, 12, 0, 0).unwrap();
        assert_eq!(
            s.next_after(first)
                .unwrap()
                .with_timezone(&Utc)
                .format("%H")
                .to_string(),
            "07"
        );
    }

    #[test]
    fn a_day_no_month_has_never_fires() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap();
        let never = Schedule::parse("0 0 31 2 *", chrono_tz::UTC, Missed::Skip).unwrap();
        assert!(!never.fires_within(now, 5));
        let leap = Schedule::parse("0 0 29 2 *", chrono_tz::UTC, Missed::Skip).unwrap();
        assert!(leap.fires_within(now, 5));
    }

    #[test]
    fn rejects_wrong_field_counts_and_values() {
        assert!(Schedule::parse("* * * *", chrono_tz::UTC, Missed::Skip).is_err());
        assert!(Schedule::parse("61 * * * *", chrono_tz::UTC, Missed::Skip).is_err());
    }
}
