//! Schedule triggers: when a cron expression fires, and which missed fire times to run.
//!
//! A [`Schedule`] is built from a workflow's [`ScheduleTrigger`]. It is pure: no I/O, no
//! database, no clock reads. The caller passes `now` and keeps the last fire time it has
//! acted on; [`Schedule::due`] says which fire times in between to run, how many were skipped,
//! and where to continue from. A scheduler loop looks like this:
//!
//! 1. `due = schedule.due(last, now, grace, limit)`; start one run per `due.fire`, count
//!    `due.skipped`, and store `due.advance_to` as the new `last` (in the same transaction as
//!    the runs, so a crash neither loses nor repeats a fire time).
//! 2. Sleep until `schedule.next_after(last)`; with [`CatchUp::All`] and a truncated batch that
//!    time is already past, so the next batch follows at once.
//!
//! # Cron expressions
//!
//! The same strings as the definition validator accepts (`schemas::validate`): 5 fields
//! (`minute hour day-of-month month day-of-week`, firing at second 0) or 6 (a leading seconds
//! field), parsed by croner with years disallowed. Nicknames such as `@daily` are one field
//! and therefore refused, as the validator refuses them.
//!
//! # Time zones and daylight saving time
//!
//! The expression is read on the wall clock of the trigger's IANA time zone (UTC when none is
//! given). Fire times are real instants and are returned in UTC. Most wall-clock times map to
//! exactly one instant; around a DST change they do not, and the rule depends on the kind of
//! job, as croner 4 classifies it (croner's `JobType`):
//!
//! - A **fixed-time job** names exactly one value in each of the seconds, minute and hour
//!   fields, with no `*` and no step: `30 2 * * *`, `0 30 1 * * MON-FRI`.
//! - Every other expression is an **interval job**: `*/15 * * * *`, `0 * * * *`,
//!   `0 9-17 * * *`, and also lists such as `30 1,13 * * *`.
//!
//! **Spring forward (a gap).** In America/New_York on 2026-03-08 the clock jumps from 02:00
//! EST to 03:00 EDT, so 02:30 does not exist that day.
//! - A fixed-time job whose wall-clock time falls in the gap fires once, at the first instant
//!   after the gap: `30 2 * * *` fires at 03:00 EDT (07:00 UTC). A daily job thus fires exactly
//!   once that day. (Europe/Berlin, 2026-03-29: 02:30 fires at 03:00 CEST, 01:00 UTC.)
//! - An interval job has no occurrence in the gap: those wall-clock times are skipped and the
//!   job continues at its next match after the gap. `0 * * * *` fires 23 times that day
//!   (02:00 is missing); `*/15 * * * *` goes from 01:45 EST to 03:00 EDT.
//!
//! **Fall back (an overlap).** In America/New_York on 2026-11-01 the clock goes back from
//! 02:00 EDT to 01:00 EST, so 01:00–01:59:59 happens twice.
//! - A fixed-time job fires once, at the first occurrence: `30 1 * * *` fires at 01:30 EDT
//!   (05:30 UTC) and not at 01:30 EST (06:30 UTC). A daily job thus fires exactly once that
//!   day. (Europe/Berlin, 2026-10-25, repeats 02:00–02:59:59: `30 2 * * *` fires at 02:30
//!   CEST, 00:30 UTC, only.)
//! - An interval job fires at every real instant whose wall-clock time matches, in both
//!   passes, in real-time order: `0 * * * *` fires 25 times that day (01:00 EDT and 01:00
//!   EST); `*/15 * * * *` fires at 01:00, 01:15, 01:30, 01:45 EDT and again at the same four
//!   wall-clock times EST, every 15 real minutes without a break.
//!
//! A consequence worth knowing: a list of explicit times such as `30 1,13 * * *` is an
//! interval job, so on a fall-back day its 01:30 fires twice, and on a spring-forward day a
//! listed time inside the gap (`30 2,14 * * *`) does not fire. Write one trigger per time of
//! day where that matters.
//!
//! The unit tests pin each of these cases to UTC instants.
//!
//! # Catch-up
//!
//! The fire times due at `now` are those `t` with `last < t <= now`. [`Schedule::due`] applies
//! the trigger's [`CatchUp`] policy to them; see there. Counting skipped times stops at
//! [`SKIPPED_COUNT_CAP`], so an every-second schedule after a month of downtime costs a
//! bounded amount of work; the most recent due time is found by searching backwards from
//! `now`, not by walking forwards through every missed time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Year};
use schemas::definition::{CatchUp, ScheduleTrigger};

/// The policy for missed fire times when a trigger does not say.
pub const DEFAULT_CATCH_UP: CatchUp = CatchUp::Latest;

/// The most skipped fire times [`Schedule::due`] counts. A larger number of skipped times is
/// reported as exactly this number, which therefore means "at least this many".
pub const SKIPPED_COUNT_CAP: u64 = 100_000;

/// Why a schedule trigger cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not have 5 or 6 whitespace-separated fields.
    #[error(
        "cron `{cron}` has {fields} fields; write 5 (minute hour day month weekday) or 6 (with leading seconds)"
    )]
    FieldCount {
        /// The expression as written.
        cron: String,
        /// How many fields it has.
        fields: usize,
    },
    /// The cron expression has the right shape but croner refuses it.
    #[error("cron `{cron}` is not valid: {reason}")]
    InvalidCron {
        /// The expression as written.
        cron: String,
        /// Croner's explanation.
        reason: String,
    },
    /// The time zone is not an IANA name known to `chrono-tz`.
    #[error(
        "`{timezone}` is not an IANA time zone (e.g. `Europe/Paris`, `America/New_York`, `UTC`)"
    )]
    UnknownTimezone {
        /// The name as written.
        timezone: String,
    },
}

/// What [`Schedule::due`] decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The fire times to start runs for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// How many due fire times were dropped by the policy (not deferred), saturating at
    /// [`SKIPPED_COUNT_CAP`].
    pub skipped: u64,
    /// The new `last`: every fire time up to and including it is settled (fired or skipped).
    /// Equal to the `last` passed in when nothing was due.
    pub advance_to: DateTime<Utc>,
}

/// A parsed schedule trigger: a cron expression on the wall clock of a time zone, and a
/// catch-up policy.
///
/// # Example
///
/// ```
/// use chrono::{TimeZone as _, Utc};
/// use engine::triggers::schedule::Schedule;
/// use schemas::definition::{CatchUp, ScheduleTrigger};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let trigger = ScheduleTrigger {
///     cron: "30 2 * * *".into(),
///     timezone: Some("America/New_York".into()),
///     catch_up: Some(CatchUp::Latest),
/// };
/// let schedule = Schedule::new(&trigger)?;
/// // 2026-03-08 has no 02:30 in New York: the run happens when the clock reaches 03:00 EDT.
/// let before = Utc.with_ymd_and_hms(2026, 3, 8, 0, 0, 0).single().ok_or("bad date")?;
/// let expected = Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).single().ok_or("bad date")?;
/// assert_eq!(schedule.next_after(before), Some(expected));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    expression: String,
    timezone: Tz,
    catch_up: CatchUp,
}

impl Schedule {
    /// Parses a trigger's cron expression and time zone, accepting exactly what the definition
    /// validator accepts.
    pub fn new(trigger: &ScheduleTrigger) -> Result<Schedule, ScheduleError> {
        let cron = parse_cron(&trigger.cron)?;
        let timezone = match &trigger.timezone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::UnknownTimezone {
                    timezone: name.clone(),
                })?,
        };
        Ok(Schedule {
            cron,
            expression: trigger.cron.clone(),
            timezone,
            catch_up: trigger.catch_up.unwrap_or(DEFAULT_CATCH_UP),
        })
    }

    /// The cron expression as written in the definition.
    pub fn cron(&self) -> &str {
        &self.expression
    }

    /// The time zone whose wall clock the expression is read on (UTC by default).
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The IANA name of [`Schedule::timezone`], e.g. `America/New_York`.
    pub fn timezone_name(&self) -> &'static str {
        self.timezone.name()
    }

    /// The policy for missed fire times ([`DEFAULT_CATCH_UP`] when the trigger does not say).
    pub fn catch_up(&self) -> CatchUp {
        self.catch_up
    }

    /// The first fire time strictly after `t`.
    ///
    /// `None` when croner finds none: an expression that never matches (`0 0 30 2 *`) or a
    /// time past croner's search range (the year 5000).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times fall on whole seconds, and croner searches from the wall-clock second of
        // its start, so the sub-second part is dropped first: the first fire time after the
        // whole second is then also the first after `t`.
        let start = whole_second(t).with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The last fire time at or before `t`, searching backwards.
    fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = whole_second(t).with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|previous| previous.with_timezone(&Utc))
    }

    /// The most recent fire time `t` with `last < t <= now`.
    fn latest_due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The backward search is one croner call however long the downtime was. The forward
        // search from just before its answer confirms it against the forward sequence that
        // `next_after` and `CatchUp::All` use, so both paths agree even around a DST change.
        let candidate = self.latest_at_or_before(now)?;
        let mut cursor = (candidate - TimeDelta::seconds(1)).max(last);
        let mut latest = None;
        while let Some(next) = self.next_after(cursor).filter(|next| *next <= now) {
            latest = Some(next);
            cursor = next;
        }
        latest.filter(|latest| *latest > last)
    }

    /// How many fire times lie strictly between `after` and `before`, counting at most
    /// `cap`.
    fn count_between(&self, after: DateTime<Utc>, before: DateTime<Utc>, cap: u64) -> u64 {
        let mut count = 0;
        let mut cursor = after;
        while count < cap {
            match self.next_after(cursor) {
                Some(next) if next < before => {
                    count += 1;
                    cursor = next;
                }
                _ => break,
            }
        }
        count
    }

    /// Decides which of the fire times `t` with `last < t <= now` to run, by the trigger's
    /// catch-up policy:
    ///
    /// - [`CatchUp::All`]: every due time, oldest first, at most `limit` of them. When there
    ///   were more, `advance_to` is the last one returned and the next call continues from
    ///   there; nothing is skipped.
    /// - [`CatchUp::Latest`]: only the most recent due time; the others are skipped.
    /// - [`CatchUp::None`]: the most recent due time only if it is on time, i.e.
    ///   `now - t <= grace`; every other due time is skipped.
    ///
    /// Under `Latest` and `None`, `advance_to` is the most recent due time, whether it fired
    /// or not. With no due times, `fire` is empty, `skipped` is 0 and `advance_to == last`.
    /// A `limit` of 0 is taken as 1, so that every call with due times makes progress.
    ///
    /// Work is bounded: `All` steps through at most `limit` fire times, and the others find
    /// the most recent one by a backward search and count skipped times only up to
    /// [`SKIPPED_COUNT_CAP`].
    pub fn due(
        &self,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
        grace: Duration,
        limit: usize,
    ) -> Due {
        let nothing = Due {
            fire: Vec::new(),
            skipped: 0,
            advance_to: last,
        };
        if now <= last {
            return nothing;
        }
        match self.catch_up {
            CatchUp::All => {
                let limit = limit.max(1);
                let mut fire = Vec::new();
                let mut cursor = last;
                while fire.len() < limit {
                    match self.next_after(cursor) {
                        Some(next) if next <= now => {
                            fire.push(next);
                            cursor = next;
                        }
                        _ => break,
                    }
                }
                Due {
                    fire,
                    skipped: 0,
                    advance_to: cursor,
                }
            }
            CatchUp::Latest | CatchUp::None => {
                let Some(latest) = self.latest_due(last, now) else {
                    return nothing;
                };
                let earlier = self.count_between(last, latest, SKIPPED_COUNT_CAP);
                let on_time = match TimeDelta::from_std(grace) {
                    Ok(grace) => now - latest <= grace,
                    // A grace beyond chrono's range covers any lateness.
                    Err(_) => true,
                };
                if self.catch_up == CatchUp::Latest || on_time {
                    Due {
                        fire: vec![latest],
                        skipped: earlier,
                        advance_to: latest,
                    }
                } else {
                    Due {
                        fire: Vec::new(),
                        skipped: earlier.saturating_add(1).min(SKIPPED_COUNT_CAP),
                        advance_to: latest,
                    }
                }
            }
        }
    }
}

/// Parses a cron expression exactly as the definition validator does: 5 or 6 fields, then
/// croner's default parser (optional seconds) with years disallowed.
fn parse_cron(text: &str) -> Result<Cron, ScheduleError> {
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(ScheduleError::FieldCount {
            cron: text.to_owned(),
            fields,
        });
    }
    CronParser::builder()
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| ScheduleError::InvalidCron {
            cron: text.to_owned(),
            reason: e.to_string(),
        })
}

/// `t` without its sub-second part (including a leap second's extra nanoseconds).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::{DateTime, TimeZone as _, Utc};
    use schemas::definition::{CatchUp, ScheduleTrigger};

    use super::{Due, SKIPPED_COUNT_CAP, Schedule, ScheduleError};

    fn schedule(cron: &str, timezone: Option<&str>, catch_up: Option<CatchUp>) -> Schedule {
        Schedule::new(&ScheduleTrigger {
            cron: cron.into(),
            timezone: timezone.map(Into::into),
            catch_up,
        })
        .unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    /// Every fire time in `(from, to]`, by repeated `next_after`.
    fn fires(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(t).filter(|n| *n <= to) {
            out.push(next);
            t = next;
        }
        out
    }

    #[test]
    fn probe() {
        let s = schedule("30 1,13 * * *", Some("America/New_York"), None);
        for t in fires(&s, utc(2026, 10, 31, 0, 0, 0), utc(2026, 11, 2, 0, 0, 0)) {
            println!("{t}");
        }
        let s = schedule("30 2,14 * * *", Some("America/New_York"), None);
        for t in fires(&s, utc(2026, 3, 7, 0, 0, 0), utc(2026, 3, 9, 0, 0, 0)) {
            println!("{t}");
        }
        let _ = (
            Due {
                fire: vec![],
                skipped: 0,
                advance_to: utc(2026, 1, 1, 0, 0, 0),
            },
            SKIPPED_COUNT_CAP,
            Instant::now(),
            Duration::ZERO,
        );
        let _: Option<ScheduleError> = None;
    }
}
