//! The progress display of `switchyard run --wait`.
//!
//! On a terminal the step table is redrawn in place after every poll: one line per step with
//! its status, attempts, duration and, for a `for_each` step, how many items are done; the last
//! error of a failed or retrying step is shown beside it. Elsewhere (a pipe, a CI log) a plain
//! line is printed each time a step's line changes, so the output reads as a log.

use std::collections::HashMap;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One step of a run as the display shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLine {
    /// Step id.
    pub id: String,
    /// Its status (`pending`, `dispatched`, `running`, `retry_wait`, `succeeded`, …).
    pub status: String,
    /// Attempts so far.
    pub attempts: u64,
    /// For a `for_each` step: how far its items are.
    pub items: Option<Items>,
    /// How long it ran, once finished.
    pub took_ms: Option<i64>,
    /// The last error's code and message.
    pub error: Option<String>,
}

/// Items of a `for_each` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Items {
    /// Finished well (succeeded or skipped).
    pub done: usize,
    /// Failed or cancelled.
    pub failed: usize,
    /// In all.
    pub total: usize,
}

impl StepLine {
    fn mark(&self) -> &'static str {
        match self.status.as_str() {
            "succeeded" => "✓",
            "failed" => "✗",
            "skipped" | "cancelled" => "-",
            "retry_wait" => "↻",
            "waiting_approval" => "⏸",
            _ => "…",
        }
    }

    fn detail(&self) -> String {
        let mut parts = Vec::new();
        if let Some(Items {
            done,
            failed,
            total,
        }) = self.items
        {
            let mut items = format!("{done}/{total} items");
            if failed > 0 {
                items.push_str(&format!(", {failed} failed"));
            }
            parts.push(items);
        }
        if self.attempts > 1 {
            parts.push(format!("attempt {}", self.attempts));
        }
        if let Some(ms) = self.took_ms {
            parts.push(format!("{ms} ms"));
        }
        if let Some(error) = &self.error {
            parts.push(error.clone());
        }
        parts.join("  ")
    }
}

/// The lines of a run as `GET /v1/runs/{id}` answers it: steps in the order the run reached
/// them, `for_each` items folded into their step.
pub fn step_lines(run: &Value) -> Vec<StepLine> {
    let steps = run
        .get("steps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut item_counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for item in steps.iter().filter(|s| s.get("item").is_some()) {
        let id = item["id"].as_str().unwrap_or("?");
        let counts = item_counts.entry(id).or_default();
        match item["status"].as_str() {
            Some("succeeded" | "skipped") => counts.0 += 1,
            Some("failed" | "cancelled") => counts.1 += 1,
            _ => {}
        }
    }
    steps
        .iter()
        .filter(|s| s.get("item").is_none())
        .map(|s| {
            let id = s["id"].as_str().unwrap_or("?").to_owned();
            let items = s.get("items").and_then(Value::as_u64).map(|total| {
                let (done, failed) = item_counts.get(id.as_str()).copied().unwrap_or_default();
                Items {
                    done,
                    failed,
                    total: usize::try_from(total).unwrap_or(usize::MAX),
                }
            });
            let time = |key: &str| {
                s.get(key)
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            };
            let took_ms = match (time("started_at"), time("finished_at")) {
                (Some(start), Some(end)) => Some((end - start).num_milliseconds().max(0)),
                _ => None,
            };
            let error = s.get("error").filter(|e| !e.is_null()).map(|e| {
                format!(
                    "{}: {}",
                    e["code"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or("")
                )
            });
            StepLine {
                status: s["status"].as_str().unwrap_or("?").to_owned(),
                attempts: s["attempts"].as_u64().unwrap_or(0),
                items,
                took_ms,
                error,
                id,
            }
        })
        .collect()
}

/// Draws a run's progress, poll after poll.
#[derive(Debug, Default)]
pub struct Display {
    live: bool,
    drawn: usize,
    seen: HashMap<String, (String, Option<Items>)>,
}

impl Display {
    /// Redraws in place when `live` (a terminal), prints changed lines otherwise.
    pub fn new(live: bool) -> Self {
        Display {
            live,
            ..Default::default()
        }
    }

    /// Shows the run's current state.
    pub fn update(&mut self, run: &Value, out: &mut impl Write) -> io::Result<()> {
        let lines = step_lines(run);
        if self.live {
            if self.drawn > 0 {
                // Back to the first line drawn last time, and clear from there down.
                write!(out, "\x1b[{}A\x1b[J", self.drawn)?;
            }
            let status = run["status"].as_str().unwrap_or("?");
            writeln!(
                out,
                "run {} {} {status}",
                run["id"].as_str().unwrap_or("?"),
                run["workflow"].as_str().unwrap_or("?"),
            )?;
            for line in &lines {
                let text = format!(
                    "  {} {:<24} {:<11} {}",
                    line.mark(),
                    line.id,
                    line.status,
                    line.detail()
                );
                writeln!(out, "{}", text.trim_end())?;
            }
            self.drawn = lines.len() + 1;
        } else {
            for line in &lines {
                let now = (line.status.clone(), line.items);
                if self.seen.get(&line.id) != Some(&now) {
                    let detail = line.detail();
                    if detail.is_empty() {
                        writeln!(out, "{} {}", line.id, line.status)?;
                    } else {
                        writeln!(out, "{} {} {detail}", line.id, line.status)?;
                    }
                    self.seen.insert(line.id.clone(), now);
                }
            }
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(status: &str) -> Value {
        json!({
            "id": "r1", "workflow": "wf", "status": status,
            "steps": [
                { "id": "fetch", "status": "succeeded", "attempts": 2,
                  "started_at": "2026-11-25T10:00:00Z", "finished_at": "2026-11-25T10:00:00.250Z" },
                { "id": "each", "status": "running", "attempts": 0, "items": 3 },
                { "id": "each", "item": 0, "status": "succeeded", "attempts": 1 },
                { "id": "each", "item": 1, "status": "failed", "attempts": 1 },
                { "id": "each", "item": 2, "status": "dispatched", "attempts": 1 },
                { "id": "notify", "status": "retry_wait", "attempts": 1,
                  "error": { "code": "rate_limited", "message": "slow down" } },
            ]
        })
    }

    #[test]
    fn items_fold_into_their_step_and_details_say_what_matters() {
        let lines = step_lines(&run("running"));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].detail(), "attempt 2  250 ms");
        assert_eq!(
            lines[1].items,
            Some(Items {
                done: 1,
                failed: 1,
                total: 3
            })
        );
        assert_eq!(lines[1].detail(), "1/3 items, 1 failed");
        assert_eq!(lines[2].mark(), "↻");
        assert_eq!(lines[2].detail(), "rate_limited: slow down");
    }

    #[test]
    fn a_terminal_is_redrawn_in_place() -> io::Result<()> {
        let mut display = Display::new(true);
        let mut out = Vec::new();
        display.update(&run("running"), &mut out)?;
        display.update(&run("running"), &mut out)?;
        let text = String::from_utf8_lossy(&out);
        // The second drawing moves back over the four lines of the first and clears them.
        assert_eq!(text.matches("\x1b[4A\x1b[J").count(), 1, "{text}");
        assert_eq!(text.matches("run r1 wf running").count(), 2, "{text}");
        Ok(())
    }

    #[test]
    fn a_pipe_gets_a_line_per_change_only() -> io::Result<()> {
        let mut display = Display::new(false);
        let mut out = Vec::new();
        display.update(&run("running"), &mut out)?;
        display.update(&run("running"), &mut out)?;
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        Ok(())
    }
}
