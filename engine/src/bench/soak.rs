//! `switchyard bench --soak DURATION`: a fixed arrival rate of short runs for a bounded time,
//! with the resident memory of each watched process sampled throughout.
//!
//! Runs are started on a clock (`--rate` a second, each start its own request so that a slow
//! answer does not slow the arrivals), whatever the engine's progress; the memory of every
//! watched process is read from `/proc/{pid}/status` once a second. The report gives ten
//! evenly spaced samples, and for each process the growth from the second quarter of the soak
//! (after start-up has filled pools and caches) to the last quarter: memory that stays flat
//! under a steady load has a ratio near 1.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::remote::{self, Target};
use super::{BenchError, Row, chain_definition, start};

/// What the soak does.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long runs keep arriving.
    pub duration: Duration,
    /// Runs started per second.
    pub rate: f64,
    /// Steps of each run (a chain of no-op calls).
    pub steps: usize,
    /// Processes whose memory is followed, besides those the benchmark starts itself.
    pub watch: Vec<Watch>,
}

/// A process to follow: a name for the report and its process id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The name shown in the report.
    pub name: String,
    /// Its process id on this machine.
    pub pid: u32,
}

impl FromStr for Watch {
    type Err = String;

    /// `NAME=PID`, e.g. `engine-1=4242`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not NAME=PID"))?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("`{pid}` in `{s}` is not a process id"))?;
        if name.trim().is_empty() {
            return Err(format!("`{s}` has no name before `=`"));
        }
        Ok(Watch {
            name: name.trim().to_owned(),
            pid,
        })
    }
}

/// Resident memory of `pid` in bytes, from `/proc/{pid}/status`; `None` once it is gone (or
/// off Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One reading of every watched process.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    rss: Vec<Option<u64>>,
}

/// The growth of one series: the median of the last quarter over the median of the second.
pub fn growth(series: &[u64]) -> Option<f64> {
    let n = series.len();
    if n < 8 {
        return None;
    }
    let median = |part: &[u64]| {
        let mut v = part.to_vec();
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let second = median(&series[n / 4..n / 2]);
    let last = median(&series[n * 3 / 4..]);
    (second > 0.0).then(|| last / second)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs the soak against `target`, following `watch`.
pub async fn run(
    target: &Target,
    options: &SoakOptions,
    watch: &[Watch],
) -> Result<Vec<Row>, BenchError> {
    if !(options.rate > 0.0 && options.rate <= 10_000.0) {
        return Err(BenchError::Setup(format!(
            "--rate {} is not between 0 and 10000 runs a second",
            options.rate
        )));
    }
    for w in watch {
        if rss_bytes(w.pid).is_none() {
            return Err(BenchError::Setup(format!(
                "cannot read the memory of {} (pid {}): no /proc/{}/status",
                w.name, w.pid, w.pid
            )));
        }
    }
    let api = &target.api;
    let workflow = remote::unique("bench-soak");
    remote::apply(
        api,
        &workflow,
        chain_definition(&workflow, options.steps.max(1), &target.noop_url),
    )
    .await?;

    // Memory, once a second, until told to stop.
    let started = Instant::now();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let pids: Vec<u32> = watch.iter().map(|w| w.pid).collect();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => samples.push(Sample {
                    at: started.elapsed(),
                    rss: pids.iter().map(|p| rss_bytes(*p)).collect(),
                }),
                _ = stop_rx.changed() => break,
            }
        }
        samples
    });

    // Arrivals on a clock; each start is its own task, at most 256 unanswered at once.
    let period = Duration::from_secs_f64(1.0 / options.rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut starts = tokio::task::JoinSet::new();
    let mut offered = 0u64;
    let mut start_errors = 0u64;
    let mut first_error = None;
    while started.elapsed() < options.duration {
        tick.tick().await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (api, workflow) = (api.clone(), workflow.clone());
        starts.spawn(async move {
            let _permit = permit;
            start(&api, &workflow, json!({})).await
        });
        offered += 1;
        // Collect finished starts as they come: a finished task not yet joined keeps its
        // whole allocation, which in a long soak would be this process's memory growing.
        while let Some(joined) = starts.try_join_next() {
            tally(joined, &mut start_errors, &mut first_error);
        }
    }
    let arrivals_took = started.elapsed();
    while let Some(joined) = starts.join_next().await {
        tally(joined, &mut start_errors, &mut first_error);
    }
    remote::wait_workflow(api, &workflow, Duration::from_secs(600)).await?;
    let drained = started.elapsed();
    let _ = stop_tx.send(true);
    let samples = sampler
        .await
        .map_err(|e| BenchError::Run(format!("memory sampler: {e}")))?;
    let not_succeeded = remote::count_not_succeeded(api, &workflow).await?;

    let mut rows = vec![
        Row {
            name: format!(
                "soak: {:.0} runs/s of {} steps for {} s",
                options.rate,
                options.steps.max(1),
                options.duration.as_secs()
            ),
            value: format!(
                "{offered} runs offered in {:.1} s ({:.1}/s), all ended {:.1} s after the first",
                arrivals_took.as_secs_f64(),
                offered as f64 / arrivals_took.as_secs_f64().max(1e-6),
                drained.as_secs_f64()
            ),
            target: "".into(),
        },
        Row {
            name: "soak: runs refused at start / ended other than succeeded".into(),
            value: match &first_error {
                Some(e) => format!("{start_errors} / {not_succeeded} (first refusal: {e})"),
                None => format!("{start_errors} / {not_succeeded}"),
            },
            target: "0 / 0".into(),
        },
    ];
    // Ten evenly spaced readings.
    let every = samples.len().div_ceil(10).max(1);
    for s in samples.iter().step_by(every) {
        let readings: Vec<String> = watch
            .iter()
            .zip(&s.rss)
            .map(|(w, r)| match r {
                Some(b) => format!("{} {}", w.name, mib(*b)),
                None => format!("{} gone", w.name),
            })
            .collect();
        rows.push(Row {
            name: format!("memory at {:.0} s", s.at.as_secs_f64()),
            value: readings.join(", "),
            target: "".into(),
        });
    }
    for (i, w) in watch.iter().enumerate() {
        let series: Vec<u64> = samples.iter().filter_map(|s| s.rss[i]).collect();
        let value = match (growth(&series), series.iter().max()) {
            (Some(g), Some(max)) => format!("× {g:.2} (max {})", mib(*max)),
            _ => "too few samples".into(),
        };
        rows.push(Row {
            name: format!("memory of {}, last quarter over second quarter", w.name),
            value,
            target: "flat (× ≤ 1.10)".into(),
        });
    }
    Ok(rows)
}

/// Counts a start that failed, keeping the first reason.
fn tally(
    joined: Result<Result<uuid::Uuid, BenchError>, tokio::task::JoinError>,
    errors: &mut u64,
    first: &mut Option<String>,
) {
    let failure = match joined {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    *errors += 1;
    first.get_or_insert(failure);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_name_equals_pid() {
        assert_eq!(
            "engine-1=42".parse::<Watch>(),
            Ok(Watch {
                name: "engine-1".into(),
                pid: 42
            })
        );
        assert!("engine".parse::<Watch>().unwrap_err().contains("NAME=PID"));
        assert!("e=x".parse::<Watch>().unwrap_err().contains("process id"));
        assert!("=1".parse::<Watch>().unwrap_err().contains("no name"));
    }

    #[test]
    fn flat_memory_grows_by_one_and_a_leak_by_more() {
        let flat: Vec<u64> = (0..40).map(|i| 100 + (i % 3)).collect();
        let g = growth(&flat).unwrap();
        assert!((0.97..=1.03).contains(&g), "{g}");
        let leak: Vec<u64> = (0..40).map(|i| 100 + 10 * i).collect();
        assert!(growth(&leak).unwrap() > 1.5);
        assert_eq!(growth(&[1, 2, 3]), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(rss_bytes(std::process::id()).unwrap_or(0) > 0);
    }
}
