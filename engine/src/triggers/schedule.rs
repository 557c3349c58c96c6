//! Schedule triggers: when a cron expression fires, and which missed fire times to run.
//!
//! A [`Schedule`] is built from a workflow's [`ScheduleTrigger`]. It is pure: no I/O, no
//! database, no clock reads. The caller passes `now` and keeps the last fire time it has
//! settled; [`Schedule::due`] says which fire times in between to run, how many were skipped,
//! and where to continue from. A scheduler loop looks like this:
//!
//! 1. `due = schedule.due(last, now, grace, limit)`; start one run per `due.fire`, count
//!    `due.skipped`, and store `due.advance_to` as the new `last` once the runs are committed.
//!    Each run's idempotency key names its fire time, so a crash in between neither loses
//!    nor repeats one: the next pass computes the same times and finds their runs.
//! 2. Sleep until `schedule.next_after(last)`. With [`CatchUp::All`] and a truncated batch that
//!    time is already past, so the next batch follows at once.
//!
//! # Cron expressions
//!
//! The same strings the definition validator accepts: 5 fields (`minute hour day-of-month
//! month day-of-week`, firing at second 0) or 6 (a leading seconds field), parsed by croner
//! with years disallowed. Nicknames such as `@daily` are one field and are refused, as the
//! validator refuses them.
//!
//! # Time zones and daylight saving time
//!
//! The expression is read on the wall clock of the trigger's IANA time zone (UTC when none is
//! given); fire times are real instants, returned in UTC. Around a DST change some wall-clock
//! times do not exist (a gap) and some happen twice (an overlap). What fires then depends on
//! the [`Timing`] of the expression:
//!
//! - A **wall-clock job** ([`Timing::WallClock`]) names its times of day: its seconds (when
//!   given), minute and hour fields hold numbers, lists, ranges and ranged steps, but no `*`.
//!   `30 2 * * *`, `0 30 1 * * MON-FRI`, `30 1,13 * * *`, `0 0-6 * * *`. Each time of day it
//!   names fires **exactly once** on each day it names, DST change or not.
//! - An **interval job** ([`Timing::Interval`]) has `*` in one of those fields: `*/15 * * * *`,
//!   `0 * * * *`, `* * * * * *`, `*/30 1 * * *`. It fires at **every real instant** whose
//!   wall-clock time matches.
//!
//! This is Vixie cron's split (a `*` in the minute or hour field makes a job a wildcard job).
//!
//! **Spring forward (a gap).** In America/New_York on 2026-03-08 the clock jumps from 02:00
//! EST to 03:00 EDT (07:00 UTC), so 02:00–02:59:59 does not exist that day.
//! - Wall-clock job: a named time inside the gap fires at the first instant after the gap.
//!   `30 2 * * *` fires at 03:00 EDT = 07:00 UTC. Several named times inside one gap, and a
//!   named time at the gap's end (`0 2,3 * * *`), fire once together at that instant.
//!   (Europe/Berlin, 2026-03-29, gap 02:00–02:59:59: `30 2 * * *` fires at 03:00 CEST =
//!   01:00 UTC.)
//! - Interval job: times inside the gap have no instant and are skipped. `0 * * * *` fires
//!   23 times that local day; `*/15 * * * *` goes from 01:45 EST straight to 03:00 EDT.
//!
//! **Fall back (an overlap).** In America/New_York on 2026-11-01 the clock goes back from
//! 02:00 EDT to 01:00 EST (06:00 UTC), so 01:00–01:59:59 happens twice.
//! - Wall-clock job: fires at the first occurrence only. `30 1 * * *` fires at 01:30 EDT =
//!   05:30 UTC, not at 01:30 EST = 06:30 UTC. (Europe/Berlin, 2026-10-25, repeats
//!   02:00–02:59:59: `30 2 * * *` fires at 02:30 CEST = 00:30 UTC only.)
//! - Interval job: fires in both passes, in real-time order. `0 * * * *` fires 25 times that
//!   local day (01:00 EDT and 01:00 EST); `*/15 * * * *` fires at 01:00, 01:15, 01:30, 01:45
//!   EDT and again at the same wall-clock times EST: every 15 real minutes, without a break.
//!
//! ## How this relates to croner
//!
//! Croner 4 applies the wall-clock rule only when each of the three fields holds exactly one
//! value (its `JobType::FixedTime`), and the interval rule to everything else, lists and
//! ranges included: left to croner, `30 1,13 * * *` fires twice at 01:30 on a fall-back day
//! and `30 2,14 * * *` does not fire at 02:30 on a spring-forward day. So this module resolves
//! wall-clock jobs itself: croner finds the matching times on the zone-less local clock, and
//! each is mapped to its instant (the only one; the earlier of two; the end of a gap).
//! Interval jobs use croner's zone-aware search unchanged. The tests check that both agree
//! with croner where croner's rule applies.
//!
//! # Catch-up
//!
//! The fire times due at `now` are those `t` with `last < t <= now`; [`Schedule::due`]
//! applies the trigger's [`CatchUp`] policy to them. The most recent one is found by
//! searching backwards from `now`, and counting skipped times stops at
//! [`SKIPPED_COUNT_CAP`], so an every-second schedule after a month of downtime costs a
//! bounded amount of work.

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone as _, Timelike as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use schemas::definition::{CatchUp, CronError, ScheduleTrigger};

/// The policy for missed fire times when a trigger does not say.
pub const DEFAULT_CATCH_UP: CatchUp = CatchUp::Latest;

/// The most skipped fire times [`Schedule::due`] counts. More skipped times are reported as
/// exactly this number, which therefore means "at least this many".
pub const SKIPPED_COUNT_CAP: u64 = 100_000;

/// Why a schedule trigger cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is refused.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// The time zone is not an IANA name known to `chrono-tz`.
    #[error(
        "`{timezone}` is not an IANA time zone (e.g. `Europe/Paris`, `America/New_York`, `UTC`)"
    )]
    UnknownTimezone {
        /// The name as written.
        timezone: String,
    },
}

/// How the wall-clock times an expression names become instants around a DST change (see the
/// [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// No `*` in the seconds, minute and hour fields: each named time of day fires exactly
    /// once per day, at the end of a gap it falls in, at the first pass of an overlap.
    WallClock,
    /// A `*` in one of those fields: fires at every real instant whose wall-clock time
    /// matches, so not in a gap and twice in an overlap.
    Interval,
}

/// What [`Schedule::due`] decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The fire times to start runs for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// How many due fire times the policy dropped (as opposed to deferred), saturating at
    /// [`SKIPPED_COUNT_CAP`].
    pub skipped: u64,
    /// The new `last`: every fire time up to and including it is settled, fired or skipped.
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
/// use schemas::definition::{CatchUp, CronError, ScheduleTrigger};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schedule = Schedule::new(&ScheduleTrigger {
///     cron: "30 2 * * *".into(),
///     timezone: Some("America/New_York".into()),
///     catch_up: Some(CatchUp::Latest),
/// })?;
/// // New York skips 02:00–02:59 on 2026-03-08: the 02:30 run happens at 03:00 EDT.
/// let midnight_utc = Utc.with_ymd_and_hms(2026, 3, 8, 0, 0, 0).single().ok_or("no such time")?;
/// let three_am_edt = Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).single().ok_or("no such time")?;
/// assert_eq!(schedule.next_after(midnight_utc), Some(three_am_edt));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    expression: String,
    timezone: Tz,
    catch_up: CatchUp,
    timing: Timing,
}

impl Schedule {
    /// Parses a trigger's cron expression and time zone, accepting exactly what the definition
    /// validator accepts.
    pub fn new(trigger: &ScheduleTrigger) -> Result<Schedule, ScheduleError> {
        let cron = trigger.parse_cron()?;
        let timezone = match &trigger.timezone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::UnknownTimezone {
                    timezone: name.clone(),
                })?,
        };
        let pattern = &cron.pattern;
        let timing = if pattern.seconds.from_wildcard
            || pattern.minutes.from_wildcard
            || pattern.hours.from_wildcard
        {
            Timing::Interval
        } else {
            Timing::WallClock
        };
        Ok(Schedule {
            cron,
            expression: trigger.cron.clone(),
            timezone,
            catch_up: trigger.catch_up.unwrap_or(DEFAULT_CATCH_UP),
            timing,
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

    /// Whether the expression is a wall-clock or an interval job, which decides what fires
    /// around a DST change.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The first fire time strictly after `t`.
    ///
    /// `None` when there is none: an expression that never matches (`0 0 30 2 *`), or a time
    /// past croner's search range (the year 5000).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times fall on whole seconds and croner searches from the wall-clock second of
        // its start, so the sub-second part goes first: the first fire time after the whole
        // second is then also the first after `t`.
        let t = whole_second(t);
        match self.timing {
            Timing::Interval => self
                .cron
                .find_next_occurrence(&t.with_timezone(&self.timezone), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
            Timing::WallClock => {
                // `instant_of` never decreases as the wall clock advances, so the wall-clock
                // matches after `t`'s own wall-clock time are the only candidates, in order.
                // They all map past `t` except when `t` is in the second pass of an overlap:
                // the first pass's times after `t`'s wall-clock time map before `t` and are
                // stepped over.
                let mut wall = t.with_timezone(&self.timezone).naive_local();
                loop {
                    wall = self.cron.find_next_occurrence(&wall, false).ok()?;
                    let next = instant_of(self.timezone, wall)?;
                    if next > t {
                        return Some(next);
                    }
                }
            }
        }
    }

    /// A fire time at or before `t`, found by searching backwards: the last one, or (for a
    /// wall-clock job when `t` is in the second pass of an overlap) possibly an earlier one.
    /// [`Schedule::latest_due`] steps forward from it to the last one.
    fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = whole_second(t);
        match self.timing {
            Timing::Interval => self
                .cron
                .find_previous_occurrence(&t.with_timezone(&self.timezone), true)
                .ok()
                .map(|previous| previous.with_timezone(&Utc)),
            Timing::WallClock => {
                // Every wall-clock time up to `t`'s own maps to `t` or earlier, so the first
                // match found backwards is an answer; the loop only guards that reasoning.
                let mut wall = t.with_timezone(&self.timezone).naive_local();
                let mut inclusive = true;
                loop {
                    wall = self.cron.find_previous_occurrence(&wall, inclusive).ok()?;
                    inclusive = false;
                    let previous = instant_of(self.timezone, wall)?;
                    if previous <= t {
                        return Some(previous);
                    }
                }
            }
        }
    }

    /// The most recent fire time `t` with `last < t <= now`.
    fn latest_due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The backward search costs one croner call however long the downtime. Stepping
        // forward from just before its answer, with the same `next_after` that `All` uses,
        // makes the result the last element of the forward sequence by construction; it is
        // normally one step.
        let candidate = self.at_or_before(now)?;
        let mut cursor = (candidate - TimeDelta::seconds(1)).max(last);
        let mut latest = None;
        while let Some(next) = self.next_after(cursor).filter(|next| *next <= now) {
            latest = Some(next);
            cursor = next;
        }
        latest
    }

    /// How many fire times lie strictly between `after` and `before`, counting at most `cap`.
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

    /// Decides which of the due fire times `t`, those with `last < t <= now`, to run, by the
    /// trigger's catch-up policy:
    ///
    /// - [`CatchUp::All`]: every due time, oldest first, at most `limit` of them. When there
    ///   are more, `advance_to` is the last one returned and the next call continues from
    ///   there; otherwise it is the last due time. Nothing is skipped.
    /// - [`CatchUp::Latest`]: only the most recent due time; the others are skipped.
    /// - [`CatchUp::None`]: the most recent due time only if it is on time, `now - t <=
    ///   grace`; every other due time is skipped.
    ///
    /// Under `Latest` and `None`, `advance_to` is the most recent due time, fired or not.
    /// With no due times, `fire` is empty, `skipped` is 0 and `advance_to == last`. A `limit`
    /// of 0 is taken as 1, so that every call with due times makes progress.
    ///
    /// Work is bounded: `All` steps through at most `limit` fire times; `Latest` and `None`
    /// find the most recent one by a backward search and count skipped times only up to
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
                    // A grace beyond chrono's range forgives any lateness.
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

/// The instant a wall-clock job's wall-clock time `wall` fires at in `tz`: its only instant;
/// the earlier of two in an overlap; the end of the gap when it falls in one.
fn instant_of(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => end_of_gap(tz, wall),
    }
}

/// The first instant whose wall-clock time in `tz` is at or after `wall`, a time inside a
/// gap: the moment the clock jumped.
fn end_of_gap(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    // UTC offsets lie within ±1 day, so the instant is in this window; the wall clock only
    // moves forward across it because no zone puts its clock back within a day of putting it
    // forward. Bisecting to the second takes 18 zone lookups.
    let wall_at = |seconds: i64| {
        DateTime::from_timestamp(seconds, 0).map(|t| t.with_timezone(&tz).naive_local())
    };
    let centre = wall.and_utc().timestamp();
    let (mut before, mut after) = (centre - 86_400, centre + 86_400);
    if wall_at(before)? >= wall || wall_at(after)? < wall {
        return None;
    }
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if wall_at(middle)? >= wall {
            after = middle;
        } else {
            before = middle;
        }
    }
    DateTime::from_timestamp(after, 0)
}

/// `t` without its sub-second part (a leap second's extra nanoseconds included).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::{DateTime, TimeZone as _, Utc};
    use chrono_tz::Tz;
    use schemas::definition::{CatchUp, CronError, ScheduleTrigger};

    use super::{Due, SKIPPED_COUNT_CAP, Schedule, ScheduleError, Timing};

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

    /// The instants that start and end the local day `y-mo-d` in `tz` (midnight exists on
    /// every day these tests use).
    fn local_day(tz: &str, y: i32, mo: u32, d: u32) -> (DateTime<Utc>, DateTime<Utc>) {
        let tz: Tz = tz.parse().unwrap();
        let start = tz.with_ymd_and_hms(y, mo, d, 0, 0, 0).single().unwrap();
        let end = (start.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_local_timezone(tz)
            .single()
            .unwrap();
        (start.with_timezone(&Utc), end.with_timezone(&Utc))
    }

    /// Every fire time `t` with `from < t <= to`, by repeated `next_after`.
    fn fires(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(t).filter(|n| *n <= to) {
            out.push(next);
            t = next;
        }
        out
    }

    /// Fire times within the local day, i.e. in `[start, end)`.
    fn fires_on(s: &Schedule, tz: &str, y: i32, mo: u32, d: u32) -> Vec<DateTime<Utc>> {
        let (start, end) = local_day(tz, y, mo, d);
        fires(
            s,
            start - chrono::TimeDelta::seconds(1),
            end - chrono::TimeDelta::seconds(1),
        )
    }

    const NY: &str = "America/New_York";
    const BERLIN: &str = "Europe/Berlin";

    // --- parsing and accessors ---

    #[test]
    fn five_field_cron_fires_at_second_zero_of_each_match() {
        let s = schedule("*/20 * * * *", None, None);
        assert_eq!(
            fires(&s, utc(2026, 5, 4, 10, 0, 0), utc(2026, 5, 4, 11, 0, 0)),
            [
                utc(2026, 5, 4, 10, 20, 0),
                utc(2026, 5, 4, 10, 40, 0),
                utc(2026, 5, 4, 11, 0, 0)
            ]
        );
    }

    #[test]
    fn six_field_cron_reads_a_leading_seconds_field() {
        let s = schedule("15,45 * * * * *", None, None);
        assert_eq!(
            fires(&s, utc(2026, 5, 4, 10, 0, 0), utc(2026, 5, 4, 10, 1, 0)),
            [utc(2026, 5, 4, 10, 0, 15), utc(2026, 5, 4, 10, 0, 45)]
        );
    }

    #[test]
    fn timezone_and_catch_up_default_to_utc_and_latest() {
        let s = schedule("0 9 * * *", None, None);
        assert_eq!(s.timezone(), Tz::UTC);
        assert_eq!(s.timezone_name(), "UTC");
        assert_eq!(s.catch_up(), CatchUp::Latest);
        assert_eq!(s.cron(), "0 9 * * *");
        assert_eq!(
            s.next_after(utc(2026, 5, 4, 9, 0, 0)),
            Some(utc(2026, 5, 5, 9, 0, 0))
        );
    }

    #[test]
    fn named_timezone_and_policy_are_kept() {
        let s = schedule("0 9 * * *", Some(BERLIN), Some(CatchUp::All));
        assert_eq!(s.timezone(), chrono_tz::Europe::Berlin);
        assert_eq!(s.timezone_name(), BERLIN);
        assert_eq!(s.catch_up(), CatchUp::All);
        // 09:00 CEST is 07:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 5, 4, 0, 0, 0)),
            Some(utc(2026, 5, 4, 7, 0, 0))
        );
    }

    #[test]
    fn next_after_is_strictly_after_even_with_sub_seconds() {
        let s = schedule("0 * * * *", None, None);
        let on_the_hour = utc(2026, 5, 4, 10, 0, 0);
        assert_eq!(s.next_after(on_the_hour), Some(utc(2026, 5, 4, 11, 0, 0)));
        let just_before = on_the_hour - chrono::TimeDelta::milliseconds(1);
        assert_eq!(s.next_after(just_before), Some(on_the_hour));
        let just_after = on_the_hour + chrono::TimeDelta::milliseconds(1);
        assert_eq!(s.next_after(just_after), Some(utc(2026, 5, 4, 11, 0, 0)));
    }

    #[test]
    fn a_cron_that_never_matches_has_no_next_time() {
        let s = schedule("0 0 30 2 *", None, None);
        assert_eq!(s.next_after(utc(2026, 1, 1, 0, 0, 0)), None);
        let due = s.due(
            utc(2026, 1, 1, 0, 0, 0),
            utc(2026, 6, 1, 0, 0, 0),
            Duration::ZERO,
            10,
        );
        assert!(due.fire.is_empty());
        assert_eq!(due.advance_to, utc(2026, 1, 1, 0, 0, 0));
    }

    #[test]
    fn timing_follows_the_wildcards_in_the_time_fields() {
        for cron in [
            "30 2 * * *",
            "0 30 1 * * MON-FRI",
            "30 1,13 * * *",
            "0 0-6 * * *",
            "0 1-5/2 * * *",
        ] {
            assert_eq!(
                schedule(cron, None, None).timing(),
                Timing::WallClock,
                "{cron}"
            );
        }
        for cron in [
            "*/15 * * * *",
            "0 * * * *",
            "* * * * * *",
            "*/30 1 * * *",
            "0 0 * * * *",
        ] {
            assert_eq!(
                schedule(cron, None, None).timing(),
                Timing::Interval,
                "{cron}"
            );
        }
    }

    #[test]
    fn bad_cron_is_refused_naming_the_expression() {
        let trigger = |cron: &str| ScheduleTrigger {
            cron: cron.into(),
            timezone: None,
            catch_up: None,
        };
        let err = Schedule::new(&trigger("61 * * * *")).unwrap_err();
        assert!(
            matches!(&err, ScheduleError::Cron(CronError::Invalid { cron, .. }) if cron == "61 * * * *")
        );
        assert!(err.to_string().contains("`61 * * * *`"), "{err}");

        let err = Schedule::new(&trigger("@daily")).unwrap_err();
        assert_eq!(
            err,
            ScheduleError::Cron(CronError::FieldCount {
                cron: "@daily".into(),
                fields: 1
            })
        );
        assert!(err.to_string().contains("`@daily`"), "{err}");

        let err = Schedule::new(&trigger("0 0 0 1 1 * 2030")).unwrap_err();
        assert!(matches!(
            err,
            ScheduleError::Cron(CronError::FieldCount { fields: 7, .. })
        ));
    }

    #[test]
    fn unknown_timezone_is_refused_naming_it() {
        let err = Schedule::new(&ScheduleTrigger {
            cron: "0 9 * * *".into(),
            timezone: Some("Mars/Olympus_Mons".into()),
            catch_up: None,
        })
        .unwrap_err();
        assert_eq!(
            err,
            ScheduleError::UnknownTimezone {
                timezone: "Mars/Olympus_Mons".into()
            }
        );
        assert!(err.to_string().contains("`Mars/Olympus_Mons`"), "{err}");
    }

    // --- daylight saving time ---

    #[test]
    fn new_york_daily_job_in_the_spring_gap_fires_once_at_the_end_of_the_gap() {
        let s = schedule("30 2 * * *", Some(NY), None);
        // 02:30 does not exist on 2026-03-08: it fires at 03:00 EDT = 07:00 UTC.
        assert_eq!(fires_on(&s, NY, 2026, 3, 8), [utc(2026, 3, 8, 7, 0, 0)]);
        // The days around it are ordinary: 02:30 EST = 07:30 UTC, 02:30 EDT = 06:30 UTC.
        assert_eq!(fires_on(&s, NY, 2026, 3, 7), [utc(2026, 3, 7, 7, 30, 0)]);
        assert_eq!(fires_on(&s, NY, 2026, 3, 9), [utc(2026, 3, 9, 6, 30, 0)]);
    }

    #[test]
    fn new_york_daily_job_in_the_autumn_overlap_fires_once_at_the_first_pass() {
        let s = schedule("30 1 * * *", Some(NY), None);
        // 01:30 happens at 05:30 UTC (EDT) and at 06:30 UTC (EST): only the first fires.
        assert_eq!(fires_on(&s, NY, 2026, 11, 1), [utc(2026, 11, 1, 5, 30, 0)]);
        assert_eq!(
            fires_on(&s, NY, 2026, 10, 31),
            [utc(2026, 10, 31, 5, 30, 0)]
        );
        assert_eq!(fires_on(&s, NY, 2026, 11, 2), [utc(2026, 11, 2, 6, 30, 0)]);
        // Nor does it fire again when the search starts inside the second pass.
        assert_eq!(
            s.next_after(utc(2026, 11, 1, 6, 10, 0)),
            Some(utc(2026, 11, 2, 6, 30, 0))
        );
    }

    #[test]
    fn new_york_daily_job_on_the_other_transition_day_is_ordinary() {
        // 02:30 exists once on the fall-back day, 01:30 once on the spring-forward day.
        let s = schedule("30 2 * * *", Some(NY), None);
        assert_eq!(fires_on(&s, NY, 2026, 11, 1), [utc(2026, 11, 1, 7, 30, 0)]);
        let s = schedule("30 1 * * *", Some(NY), None);
        assert_eq!(fires_on(&s, NY, 2026, 3, 8), [utc(2026, 3, 8, 6, 30, 0)]);
    }

    #[test]
    fn berlin_daily_job_fires_once_on_both_transition_days() {
        let s = schedule("30 2 * * *", Some(BERLIN), None);
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST = 01:00 UTC.
        assert_eq!(
            fires_on(&s, BERLIN, 2026, 3, 29),
            [utc(2026, 3, 29, 1, 0, 0)]
        );
        // 2026-10-25: 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET): the first fires.
        assert_eq!(
            fires_on(&s, BERLIN, 2026, 10, 25),
            [utc(2026, 10, 25, 0, 30, 0)]
        );
        // A 6-field daily job behaves the same.
        let s = schedule("0 30 2 * * *", Some(BERLIN), None);
        assert_eq!(
            fires_on(&s, BERLIN, 2026, 3, 29),
            [utc(2026, 3, 29, 1, 0, 0)]
        );
        assert_eq!(
            fires_on(&s, BERLIN, 2026, 10, 25),
            [utc(2026, 10, 25, 0, 30, 0)]
        );
    }

    #[test]
    fn listed_times_of_day_fire_once_each_across_transitions() {
        // Croner alone would fire 01:30 twice here and skip 02:30 below.
        let s = schedule("30 1,13 * * *", Some(NY), None);
        assert_eq!(
            fires_on(&s, NY, 2026, 11, 1),
            [utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 1, 18, 30, 0)]
        );
        let s = schedule("30 2,14 * * *", Some(NY), None);
        assert_eq!(
            fires_on(&s, NY, 2026, 3, 8),
            [utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 8, 18, 30, 0)]
        );
        // Two named times in the gap and one at its end fire once, together.
        let s = schedule("0,30 2 * * *", Some(NY), None);
        assert_eq!(fires_on(&s, NY, 2026, 3, 8), [utc(2026, 3, 8, 7, 0, 0)]);
        let s = schedule("0 2,3 * * *", Some(NY), None);
        assert_eq!(fires_on(&s, NY, 2026, 3, 8), [utc(2026, 3, 8, 7, 0, 0)]);
    }

    #[test]
    fn hourly_job_fires_23_and_25_times_on_transition_days() {
        for tz in [NY, BERLIN] {
            let s = schedule("0 * * * *", Some(tz), None);
            let (spring, autumn) = if tz == NY {
                ((3, 8), (11, 1))
            } else {
                ((3, 29), (10, 25))
            };
            assert_eq!(fires_on(&s, tz, 2026, spring.0, spring.1).len(), 23, "{tz}");
            assert_eq!(fires_on(&s, tz, 2026, autumn.0, autumn.1).len(), 25, "{tz}");
            assert_eq!(fires_on(&s, tz, 2026, 6, 1).len(), 24, "{tz}");
        }
        let s = schedule("0 * * * *", Some(NY), None);
        let autumn = fires_on(&s, NY, 2026, 11, 1);
        // Both 01:00s: 05:00 UTC (EDT) and 06:00 UTC (EST), then 02:00 EST = 07:00 UTC.
        assert_eq!(
            autumn[1..4],
            [
                utc(2026, 11, 1, 5, 0, 0),
                utc(2026, 11, 1, 6, 0, 0),
                utc(2026, 11, 1, 7, 0, 0)
            ]
        );
        let spring = fires_on(&s, NY, 2026, 3, 8);
        // 01:00 EST = 06:00 UTC, then 03:00 EDT = 07:00 UTC.
        assert_eq!(
            spring[1..3],
            [utc(2026, 3, 8, 6, 0, 0), utc(2026, 3, 8, 7, 0, 0)]
        );
    }

    #[test]
    fn every_15_minutes_fires_every_real_15_minutes_across_fall_back() {
        let s = schedule("*/15 * * * *", Some(NY), None);
        // 00:45 EDT (04:45 UTC) to 02:15 EST (07:15 UTC): 2.5 real hours, both passes of 01:xx.
        let got = fires(&s, utc(2026, 11, 1, 4, 30, 0), utc(2026, 11, 1, 7, 15, 0));
        let expected: Vec<_> = (0..=10)
            .map(|i| utc(2026, 11, 1, 4, 45, 0) + chrono::TimeDelta::minutes(15 * i))
            .collect();
        assert_eq!(got, expected);
        // And across spring forward: 01:45 EST (06:45 UTC) straight to 03:00 EDT (07:00 UTC).
        assert_eq!(
            fires(&s, utc(2026, 3, 8, 6, 30, 0), utc(2026, 3, 8, 7, 15, 0)),
            [
                utc(2026, 3, 8, 6, 45, 0),
                utc(2026, 3, 8, 7, 0, 0),
                utc(2026, 3, 8, 7, 15, 0)
            ]
        );
    }

    #[test]
    fn single_time_jobs_agree_with_croner_own_fixed_time_rule() {
        // Where croner applies the wall-clock rule itself (one value per time field), this
        // module's own resolution must give the same instants.
        let zones = [
            NY,
            BERLIN,
            "Australia/Lord_Howe",
            "America/Santiago",
            "Asia/Tehran",
            "UTC",
        ];
        let crons = [
            "30 2 * * *",
            "30 1 * * *",
            "0 0 * * *",
            "15 0 2 * * SUN",
            "59 23 * * *",
        ];
        for zone in zones {
            let tz: Tz = zone.parse().unwrap();
            for cron in crons {
                let s = schedule(cron, Some(zone), None);
                assert_eq!(s.timing(), Timing::WallClock);
                let mut t = utc(2025, 12, 25, 0, 0, 0);
                while t < utc(2027, 1, 5, 0, 0, 0) {
                    let ours = s.next_after(t).unwrap();
                    let theirs = s
                        .cron
                        .find_next_occurrence(&t.with_timezone(&tz), false)
                        .unwrap()
                        .with_timezone(&Utc);
                    assert_eq!(ours, theirs, "{cron} in {zone} after {t}");
                    t = ours;
                }
            }
        }
    }

    #[test]
    fn latest_due_time_agrees_with_the_forward_sequence_around_transitions() {
        // `Latest` and `None` find the most recent due time by searching backwards; it must be
        // the last of the times `All` would step through, at every `now` around each change.
        let crons = [
            "0 * * * *",
            "*/15 * * * *",
            "30 1 * * *",
            "30 2 * * *",
            "30 1,2 * * *",
            "*/30 1 * * *",
        ];
        let windows = [
            (NY, utc(2026, 3, 7, 12, 0, 0)),
            (NY, utc(2026, 10, 31, 12, 0, 0)),
            (BERLIN, utc(2026, 3, 28, 12, 0, 0)),
            (BERLIN, utc(2026, 10, 24, 12, 0, 0)),
        ];
        for (zone, from) in windows {
            let to = from + chrono::TimeDelta::days(2);
            for cron in crons {
                let s = schedule(cron, Some(zone), None);
                let all = fires(&s, from, to);
                let mut now = from;
                while now < to {
                    let expected = all.iter().rev().find(|t| **t <= now).copied();
                    assert_eq!(
                        s.latest_due(from, now),
                        expected,
                        "{cron} in {zone} at {now}"
                    );
                    now += chrono::TimeDelta::minutes(5);
                }
            }
        }
    }

    // --- catch-up ---

    /// An hourly job, down from just after 09:00 until 12:30: 10:00, 11:00 and 12:00 are due.
    fn three_hour_downtime(catch_up: CatchUp, grace: Duration) -> Due {
        let s = schedule("0 * * * *", Some(NY), Some(catch_up));
        s.due(
            utc(2026, 5, 4, 9, 0, 0),
            utc(2026, 5, 4, 12, 30, 0),
            grace,
            100,
        )
    }

    #[test]
    fn catch_up_all_fires_every_missed_time_in_order() {
        let due = three_hour_downtime(CatchUp::All, Duration::ZERO);
        assert_eq!(
            due,
            Due {
                fire: vec![
                    utc(2026, 5, 4, 10, 0, 0),
                    utc(2026, 5, 4, 11, 0, 0),
                    utc(2026, 5, 4, 12, 0, 0)
                ],
                skipped: 0,
                advance_to: utc(2026, 5, 4, 12, 0, 0),
            }
        );
    }

    #[test]
    fn catch_up_latest_fires_the_most_recent_and_skips_the_rest() {
        let due = three_hour_downtime(CatchUp::Latest, Duration::ZERO);
        assert_eq!(
            due,
            Due {
                fire: vec![utc(2026, 5, 4, 12, 0, 0)],
                skipped: 2,
                advance_to: utc(2026, 5, 4, 12, 0, 0)
            }
        );
    }

    #[test]
    fn catch_up_none_skips_everything_missed() {
        // 12:00 is 30 minutes late against a 1-minute grace: nothing fires.
        let due = three_hour_downtime(CatchUp::None, Duration::from_secs(60));
        assert_eq!(
            due,
            Due {
                fire: vec![],
                skipped: 3,
                advance_to: utc(2026, 5, 4, 12, 0, 0)
            }
        );
    }

    #[test]
    fn catch_up_none_fires_a_time_that_is_on_time() {
        // Within an hour's grace, 12:00 (30 minutes ago) still counts as on time.
        let due = three_hour_downtime(CatchUp::None, Duration::from_secs(3600));
        assert_eq!(
            due,
            Due {
                fire: vec![utc(2026, 5, 4, 12, 0, 0)],
                skipped: 2,
                advance_to: utc(2026, 5, 4, 12, 0, 0)
            }
        );
        // The normal case: the scheduler wakes a second after the fire time.
        let s = schedule("0 * * * *", None, Some(CatchUp::None));
        let due = s.due(
            utc(2026, 5, 4, 11, 0, 0),
            utc(2026, 5, 4, 12, 0, 1),
            Duration::from_secs(5),
            10,
        );
        assert_eq!(
            due,
            Due {
                fire: vec![utc(2026, 5, 4, 12, 0, 0)],
                skipped: 0,
                advance_to: utc(2026, 5, 4, 12, 0, 0)
            }
        );
        // The grace boundary is inclusive.
        let due = s.due(
            utc(2026, 5, 4, 11, 0, 0),
            utc(2026, 5, 4, 12, 0, 5),
            Duration::from_secs(5),
            10,
        );
        assert_eq!(due.fire, [utc(2026, 5, 4, 12, 0, 0)]);
        let due = s.due(
            utc(2026, 5, 4, 11, 0, 0),
            utc(2026, 5, 4, 12, 0, 6),
            Duration::from_secs(5),
            10,
        );
        assert!(due.fire.is_empty());
        assert_eq!(due.skipped, 1);
    }

    #[test]
    fn catch_up_all_truncates_at_the_limit_and_continues_from_there() {
        let s = schedule("0 * * * *", None, Some(CatchUp::All));
        let (last, now) = (utc(2026, 5, 4, 0, 0, 0), utc(2026, 5, 4, 10, 30, 0));
        let first = s.due(last, now, Duration::ZERO, 4);
        assert_eq!(
            first.fire,
            [
                utc(2026, 5, 4, 1, 0, 0),
                utc(2026, 5, 4, 2, 0, 0),
                utc(2026, 5, 4, 3, 0, 0),
                utc(2026, 5, 4, 4, 0, 0)
            ]
        );
        assert_eq!(first.skipped, 0);
        assert_eq!(first.advance_to, utc(2026, 5, 4, 4, 0, 0));
        let second = s.due(first.advance_to, now, Duration::ZERO, 4);
        assert_eq!(second.fire.first(), Some(&utc(2026, 5, 4, 5, 0, 0)));
        let third = s.due(second.advance_to, now, Duration::ZERO, 4);
        assert_eq!(
            third.fire,
            [utc(2026, 5, 4, 9, 0, 0), utc(2026, 5, 4, 10, 0, 0)]
        );
        assert_eq!(third.advance_to, utc(2026, 5, 4, 10, 0, 0));
        // A limit of 0 still makes progress.
        assert_eq!(
            s.due(last, now, Duration::ZERO, 0).fire,
            [utc(2026, 5, 4, 1, 0, 0)]
        );
    }

    #[test]
    fn nothing_due_leaves_last_where_it_was() {
        let last = utc(2026, 5, 4, 10, 0, 0);
        for catch_up in [CatchUp::All, CatchUp::Latest, CatchUp::None] {
            let s = schedule("0 * * * *", None, Some(catch_up));
            let expected = Due {
                fire: vec![],
                skipped: 0,
                advance_to: last,
            };
            // Before the next fire time, at `last` itself, and with a clock behind `last`.
            for now in [utc(2026, 5, 4, 10, 59, 59), last, utc(2026, 5, 4, 9, 0, 0)] {
                assert_eq!(
                    s.due(last, now, Duration::from_secs(60), 10),
                    expected,
                    "{catch_up:?}"
                );
            }
        }
    }

    #[test]
    fn due_across_fall_back_counts_both_passes_of_an_interval_job() {
        // Down from 00:30 EDT to 02:30 EST: 01:00 EDT, 01:00 EST and 02:00 EST are due.
        let s = schedule("0 * * * *", Some(NY), Some(CatchUp::All));
        let (last, now) = (utc(2026, 11, 1, 4, 30, 0), utc(2026, 11, 1, 7, 30, 0));
        assert_eq!(
            s.due(last, now, Duration::ZERO, 10).fire,
            [
                utc(2026, 11, 1, 5, 0, 0),
                utc(2026, 11, 1, 6, 0, 0),
                utc(2026, 11, 1, 7, 0, 0)
            ]
        );
        let s = schedule("0 * * * *", Some(NY), Some(CatchUp::Latest));
        assert_eq!(
            s.due(last, now, Duration::ZERO, 10),
            Due {
                fire: vec![utc(2026, 11, 1, 7, 0, 0)],
                skipped: 2,
                advance_to: utc(2026, 11, 1, 7, 0, 0)
            }
        );
        // A daily 01:30 job inside the second pass has nothing more to do.
        let s = schedule("30 1 * * *", Some(NY), Some(CatchUp::Latest));
        let due = s.due(
            utc(2026, 11, 1, 5, 30, 0),
            utc(2026, 11, 1, 6, 45, 0),
            Duration::ZERO,
            10,
        );
        assert!(due.fire.is_empty());
    }

    #[test]
    fn skipped_count_is_capped_for_an_every_second_job_after_30_days() {
        let started = Instant::now();
        for catch_up in [CatchUp::Latest, CatchUp::None] {
            let s = schedule("* * * * * *", Some(NY), Some(catch_up));
            let (last, now) = (utc(2026, 3, 1, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0));
            let due = s.due(last, now, Duration::ZERO, 10);
            assert_eq!(due.advance_to, now);
            assert_eq!(due.skipped, SKIPPED_COUNT_CAP);
            // `now` itself is a fire time, so even `None` with no grace fires it.
            assert_eq!(due.fire, [now]);
        }
        let s = schedule("* * * * * *", None, Some(CatchUp::All));
        let due = s.due(
            utc(2026, 3, 1, 0, 0, 0),
            utc(2026, 3, 31, 0, 0, 0),
            Duration::ZERO,
            1000,
        );
        assert_eq!(due.fire.len(), 1000);
        assert_eq!(due.advance_to, utc(2026, 3, 1, 0, 16, 40));
        let elapsed = started.elapsed();
        // About a second in an unoptimised build; uncapped it would be 2.6 million steps.
        assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    }
}
