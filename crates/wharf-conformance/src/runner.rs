//! Runs checks one after another and prints one PASS or FAIL line for each.
//!
//! A check is a plain async function returning [`Outcome`]; the runner also catches panics and
//! enforces a time limit, so nothing a registry does (or a bug in a check) can end the run
//! early or leave the summary line unprinted.
//! Checks run sequentially: the output order is stable, and the registry sees a simple client.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::context::Ctx;
use crate::outcome::{Failure, Feature, Outcome};

/// How a check is started: a function from the context to a boxed future.
pub type CheckFn = for<'a> fn(&'a Ctx) -> BoxFuture<'a, Outcome>;

/// One named check.
#[derive(Clone, Copy)]
pub struct Check {
    /// A stable dotted id, e.g. `blobs.push.chunked`; `--only` matches substrings of it.
    pub id: &'static str,
    /// What the check verifies, in one line.
    pub description: &'static str,
    /// The check itself.
    pub run: CheckFn,
}

/// Declares a [`Check`] from an id, a description and an `async fn(&Ctx) -> Outcome`.
macro_rules! check {
    ($id:literal, $description:literal, $f:path) => {{
        fn run(
            ctx: &$crate::context::Ctx,
        ) -> futures_util::future::BoxFuture<'_, $crate::outcome::Outcome> {
            Box::pin($f(ctx))
        }
        $crate::runner::Check {
            id: $id,
            description: $description,
            run,
        }
    }};
}
pub(crate) use check;

/// The totals of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
}

/// Runs every check, writing a line per check to `out`, and returns the totals.
pub async fn run_checks(
    ctx: &Ctx,
    checks: &[Check],
    timeout: Duration,
    out: &mut dyn Write,
) -> Report {
    let mut report = Report::default();
    for check in checks {
        let result = run_one(ctx, check, timeout).await;
        let notes = ctx.take_notes();
        let line = match result {
            Ok(()) if notes.is_empty() => format!("PASS {} {}", check.id, check.description),
            Ok(()) => format!(
                "PASS {} {} [{}]",
                check.id,
                check.description,
                summarize_notes(&notes)
            ),
            Err(failure) => format!(
                "FAIL {} {}: {}",
                check.id,
                check.description,
                describe(&failure)
            ),
        };
        if line.starts_with("PASS") {
            report.passed += 1;
        } else {
            report.failed += 1;
        }
        // One line per check, whatever the registry put into a reason.
        let line = line.replace(['\r', '\n'], " ");
        // A closed stdout (e.g. piped into `head`) must not turn into a panic mid-run.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    report
}

async fn run_one(ctx: &Ctx, check: &Check, timeout: Duration) -> Outcome {
    let guarded = AssertUnwindSafe((check.run)(ctx)).catch_unwind();
    match tokio::time::timeout(timeout, guarded).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|it| (*it).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Err(Failure::Fail(format!("check panicked: {message}")))
        }
        Err(_) => Err(Failure::Fail(format!(
            "timed out after {}s",
            timeout.as_secs()
        ))),
    }
}

/// One note per feature: the first reason, and how many more times the feature was missed.
fn summarize_notes(notes: &[(Feature, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut seen: Vec<Feature> = Vec::new();
    for (feature, reason) in notes {
        if seen.contains(feature) {
            continue;
        }
        seen.push(*feature);
        let more = notes.iter().filter(|(it, _)| it == feature).count() - 1;
        let suffix = if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        };
        parts.push(format!("allowed missing {feature}: {reason}{suffix}"));
    }
    parts.join("; ")
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Fail(reason) => reason.clone(),
        Failure::Absent { feature, reason } => format!(
            "{reason} (optional feature `{feature}` is missing; \
             `--allow-missing {feature}` accepts this)"
        ),
    }
}
