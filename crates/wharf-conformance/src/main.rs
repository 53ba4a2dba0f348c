//! `wharf-conformance`: the command line around the suite.
//!
//! It owns everything the library does not: parsing flags and environment, picking this run's
//! random repository suffix, printing the summary line and choosing the exit status (0 when
//! every check passed, 1 when any failed, 2 for usage errors).

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use reqwest::Url;

use wharf_conformance::checks;
use wharf_conformance::client::{BasicAuth, Client};
use wharf_conformance::content::unique_token;
use wharf_conformance::context::Ctx;
use wharf_conformance::outcome::Feature;
use wharf_conformance::runner::{self, Report};

/// Runs OCI distribution-spec v1.1 conformance checks against a registry.
///
/// Prints `PASS <id> <description>` or `FAIL <id> <description>: <reason>` per check and a
/// final `N passed, M failed` line; exits 0 only when nothing failed.
#[derive(Debug, Parser)]
#[command(name = "wharf-conformance", version)]
struct Cli {
    /// Base URL of the registry, e.g. http://127.0.0.1:5000
    #[arg(long, env = "WHARF_CONFORMANCE_URL")]
    url: String,

    /// Repository namespace for this run; a random suffix is appended
    #[arg(long, default_value = "conformance/test")]
    namespace: String,

    /// Second namespace, the source of cross-repository mounts; a random suffix is appended
    #[arg(long, default_value = "conformance/other")]
    cross_namespace: String,

    /// Run only the checks whose id contains this substring
    #[arg(long, value_name = "SUBSTR")]
    only: Option<String>,

    /// Credentials sent with every request, as user:password
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "WHARF_CONFORMANCE_BASIC_AUTH",
        hide_env_values = true
    )]
    basic_auth: Option<String>,

    /// Optional features the registry may lack without failing (comma-separated, or `all`):
    /// single-post, mount, range, sha512, streamed-patch, upload-cancel, manifest-ref-check,
    /// docker-manifests, delete, tag-delete, referrers, referrers-filter, catalog, error-body,
    /// docker-headers, tag-param, token-mount
    #[arg(long, value_name = "FEATURES", value_delimiter = ',')]
    allow_missing: Vec<String>,

    /// Time limit for each check, in seconds
    #[arg(long, default_value_t = 120)]
    timeout: u64,

    /// List the checks and exit
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(report) if report.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(err) => {
            eprintln!("wharf-conformance: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<Report> {
    let mut selected = checks::all();
    if let Some(only) = &cli.only {
        selected.retain(|it| it.id.contains(only.as_str()));
        if selected.is_empty() {
            bail!("no check id contains {only:?}; see --list");
        }
    }
    if cli.list {
        for check in &selected {
            println!("{} {}", check.id, check.description);
        }
        return Ok(Report::default());
    }

    let base = Url::parse(&cli.url).with_context(|| format!("invalid --url {:?}", cli.url))?;
    if base.scheme() != "http" {
        // reqwest is built without a TLS stack in this workspace; see the README.
        bail!("only http:// registry URLs are supported, got {}", cli.url);
    }
    for namespace in [&cli.namespace, &cli.cross_namespace] {
        if !is_valid_name(namespace) {
            bail!("namespace {namespace:?} is not a valid repository name");
        }
    }
    let auth = cli
        .basic_auth
        .as_deref()
        .map(parse_basic_auth)
        .transpose()?;
    let allowed = parse_features(&cli.allow_missing)?;

    let client = Client::new(base, auth).context("building the HTTP client")?;
    let ctx = Ctx::new(
        client,
        &cli.namespace,
        &cli.cross_namespace,
        unique_token(),
        allowed,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut stdout = std::io::stdout().lock();
    let report = runtime.block_on(runner::run_checks(
        &ctx,
        &selected,
        Duration::from_secs(cli.timeout),
        &mut stdout,
    ));
    let _ = writeln!(stdout, "{} passed, {} failed", report.passed, report.failed);
    let _ = stdout.flush();
    Ok(report)
}

fn parse_basic_auth(value: &str) -> Result<BasicAuth> {
    let Some((user, password)) = value.split_once(':') else {
        bail!("--basic-auth must be user:password");
    };
    Ok(BasicAuth {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

fn parse_features(values: &[String]) -> Result<HashSet<Feature>> {
    let mut allowed = HashSet::new();
    for value in values
        .iter()
        .map(|it| it.trim())
        .filter(|it| !it.is_empty())
    {
        if value == "all" {
            allowed.extend(Feature::ALL);
        } else {
            allowed.insert(value.parse::<Feature>()?);
        }
    }
    Ok(allowed)
}

/// The spec's `<name>` grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(is_valid_component)
}

fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut idx = 0;
    loop {
        // A run of alphanumerics is required at the start and after every separator.
        let start = idx;
        while idx < bytes.len() && alnum(bytes[idx]) {
            idx += 1;
        }
        if idx == start {
            return false;
        }
        if idx == bytes.len() {
            return true;
        }
        let sep_start = idx;
        while idx < bytes.len() && !alnum(bytes[idx]) {
            idx += 1;
        }
        let separator = &component[sep_start..idx];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_grammar_follows_the_spec() {
        for good in ["a", "conformance/test", "a.b/c_d/e__f/g--h", "x-y-z/1"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a_.b", "a/B",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn features_parse_with_all() {
        let all = parse_features(&["all".to_owned()]).unwrap();
        assert_eq!(all.len(), Feature::ALL.len());
        let some = parse_features(&["sha512".to_owned(), " tag-delete ".to_owned()]).unwrap();
        assert!(some.contains(&Feature::Sha512) && some.contains(&Feature::TagDelete));
        assert!(parse_features(&["bogus".to_owned()]).is_err());
    }
}
