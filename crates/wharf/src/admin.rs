//! Account, team, token, grant and audit commands, acting on the data
//! directory's database directly (safe while the server runs).
//!
//! Every command is scriptable: passwords come from standard input with
//! `--password-stdin`, `--json` prints machine-readable output, and the exit
//! code tells success (0) from failure (non-zero with a message).

use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use wharf_auth::admin;
use wharf_meta::Meta;

/// `wharf user …`
#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user (or, with --robot, a robot account that signs in with tokens only).
    Add {
        /// Account name.
        name: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
        /// A robot account: no password, API tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        robot: bool,
        /// Read the password from standard input (otherwise one is generated and printed).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password, read from standard input.
    Passwd {
        /// Account name.
        name: String,
        /// Read the password from standard input (required: no prompt is shown).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Delete an account with its tokens, memberships and grants.
    Del {
        /// Account name.
        name: String,
    },
    /// List accounts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import users from an htpasswd file (bcrypt entries); they keep their passwords.
    ImportHtpasswd {
        /// The htpasswd file.
        file: std::path::PathBuf,
        /// Replace the password of accounts that already exist.
        #[arg(long)]
        replace: bool,
    },
}

/// `wharf team …`
#[derive(Subcommand)]
pub(crate) enum TeamCommand {
    /// Create a team.
    Add {
        /// Team name.
        name: String,
    },
    /// Delete a team with its grants.
    Del {
        /// Team name.
        name: String,
    },
    /// Add an account to a team.
    AddMember {
        /// Team name.
        team: String,
        /// Account name.
        account: String,
    },
    /// Remove an account from a team.
    RemoveMember {
        /// Team name.
        team: String,
        /// Account name.
        account: String,
    },
    /// List teams and their members.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `wharf token …`
#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an API token; it is printed once and never stored.
    Create {
        /// Account the token acts as.
        #[arg(long)]
        user: String,
        /// Restrict to PATTERN:ACTIONS, e.g. 'team/**:pull,push' (repeatable);
        /// without it the token has the account's rights.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Expire after this many seconds.
        #[arg(long)]
        expires_in_secs: Option<u64>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this account's tokens.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// Token id (the part after `wharf_`, before the next `_`).
        id: String,
    },
}

/// `wharf grant …`
#[derive(Subcommand)]
pub(crate) enum GrantCommand {
    /// Grant SUBJECT the ACTIONS on repositories matching PATTERN.
    Add {
        /// `anonymous`, `user:NAME` or `team:NAME`.
        subject: String,
        /// Repository pattern: `*` within a path component, `**` across.
        pattern: String,
        /// Comma-separated: pull, push, delete, admin.
        actions: String,
    },
    /// List grants.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a grant by id.
    Del {
        /// Grant id.
        id: String,
    },
}

fn read_password_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .take(wharf_auth::secret::MAX_PASSWORD_BYTES as u64 + 2)
        .read_to_string(&mut s)
        .context("cannot read the password from standard input")?;
    let pw = s.strip_suffix('\n').unwrap_or(&s);
    let pw = pw.strip_suffix('\r').unwrap_or(pw).to_owned();
    if pw.is_empty() {
        bail!("empty password on standard input");
    }
    if pw.len() > wharf_auth::secret::MAX_PASSWORD_BYTES {
        bail!(
            "password longer than {} bytes",
            wharf_auth::secret::MAX_PASSWORD_BYTES
        );
    }
    Ok(pw)
}

pub(crate) async fn user(meta: &Meta, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add {
            name,
            admin,
            robot,
            password_stdin,
        } => {
            let password = if password_stdin {
                Some(read_password_stdin()?)
            } else {
                None
            };
            let generated =
                admin::add_account(meta, &name, password.as_deref(), admin, robot).await?;
            let kind = if robot { "robot" } else { "user" };
            match generated {
                Some(pw) => println!("created {kind} {name} with password {pw}"),
                None => println!("created {kind} {name}"),
            }
        }
        UserCommand::Passwd { name, .. } => {
            let pw = read_password_stdin()?;
            admin::set_password(meta, &name, &pw).await?;
            println!("password of {name} changed");
        }
        UserCommand::Del { name } => {
            admin::delete_account(meta, &name).await?;
            println!("deleted {name}");
        }
        UserCommand::List { json } => {
            let accounts = admin::accounts(meta).await?;
            if json {
                let v: Vec<_> = accounts
                    .iter()
                    .map(|a| serde_json::json!({"name": a.name, "kind": a.kind.as_str(), "admin": a.is_admin, "disabled": a.disabled}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for a in accounts {
                    let role = if a.is_admin { " admin" } else { "" };
                    println!("{}\t{}{role}", a.name, a.kind);
                }
            }
        }
        UserCommand::ImportHtpasswd { file, replace } => {
            return import_htpasswd(meta, &file, replace).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn import_htpasswd(
    meta: &Meta,
    file: &std::path::Path,
    replace: bool,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (mut imported, mut updated, mut skipped) = (0, 0, 0);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            eprintln!("line {}: not NAME:HASH, skipped", i + 1);
            skipped += 1;
            continue;
        };
        let bcrypt =
            hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$");
        if !bcrypt || admin::validate_name(name).is_err() {
            // MD5 (apr1), SHA-1 and crypt hashes are too weak to carry over.
            eprintln!(
                "line {}: {name}: only bcrypt entries (htpasswd -B) can be imported, skipped",
                i + 1
            );
            skipped += 1;
            continue;
        }
        if meta
            .create_account(name, wharf_meta::AccountKind::User, Some(hash), false)
            .await?
        {
            imported += 1;
        } else if replace {
            meta.set_password(name, hash).await?;
            updated += 1;
        } else {
            eprintln!(
                "line {}: {name} already exists, skipped (use --replace)",
                i + 1
            );
            skipped += 1;
        }
    }
    println!("imported {imported}, updated {updated}, skipped {skipped}");
    Ok(if skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) async fn team(meta: &Meta, cmd: TeamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TeamCommand::Add { name } => {
            admin::add_team(meta, &name).await?;
            println!("created team {name}");
        }
        TeamCommand::Del { name } => {
            admin::delete_team(meta, &name).await?;
            println!("deleted team {name}");
        }
        TeamCommand::AddMember { team, account } => {
            admin::set_membership(meta, &team, &account, true).await?;
            println!("{account} is a member of {team}");
        }
        TeamCommand::RemoveMember { team, account } => {
            admin::set_membership(meta, &team, &account, false).await?;
            println!("{account} left {team}");
        }
        TeamCommand::List { json } => {
            let teams = meta.teams().await?;
            if json {
                let v: Vec<_> = teams
                    .iter()
                    .map(|(t, m)| serde_json::json!({"name": t, "members": m}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (t, m) in teams {
                    println!("{t}\t{}", m.join(","));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn token(meta: &Meta, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            user,
            scopes,
            expires_in_secs,
            description,
            json,
        } => {
            let mut pairs = Vec::new();
            for s in &scopes {
                let (pattern, actions) = s
                    .rsplit_once(':')
                    .with_context(|| format!("scope {s:?} is not PATTERN:ACTIONS"))?;
                pairs.push((pattern.to_owned(), actions.to_owned()));
            }
            let parsed = admin::parse_token_scopes(&pairs)?;
            let (record, secret) =
                admin::create_token(meta, &user, &parsed, &description, expires_in_secs).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": record.id, "user": user, "token": secret, "expires_at": record.expires_at})
                );
            } else {
                println!("{secret}");
            }
        }
        TokenCommand::List { user, json } => {
            let tokens = meta.tokens(user.as_deref()).await?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({
                        "id": t.id, "user": t.account, "description": t.description,
                        "scopes": serde_json::from_str::<serde_json::Value>(&t.scopes).unwrap_or_default(),
                        "created_at": t.created_at, "expires_at": t.expires_at, "revoked_at": t.revoked_at,
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for t in tokens {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!("{}\t{}\t{state}\t{}", t.id, t.account, t.description);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            admin::revoke_token(meta, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn grant(meta: &Meta, cmd: GrantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GrantCommand::Add {
            subject,
            pattern,
            actions,
        } => {
            println!(
                "{}",
                admin::add_grant(meta, &subject, &pattern, &actions).await?
            );
        }
        GrantCommand::List { json } => {
            let grants = meta.grants().await?;
            if json {
                let v: Vec<_> = grants
                    .iter()
                    .map(|g| serde_json::json!({"id": g.id, "subject": admin::subject_string(g), "pattern": g.pattern, "actions": g.actions, "origin": g.origin.as_str()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for g in grants {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        g.id,
                        admin::subject_string(&g),
                        g.pattern,
                        g.actions,
                        g.origin
                    );
                }
            }
        }
        GrantCommand::Del { id } => {
            admin::remove_grant(meta, &id).await?;
            println!("removed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn audit(meta: &Meta, limit: u64, json: bool) -> anyhow::Result<ExitCode> {
    for r in meta.audit_log(limit).await? {
        if json {
            println!(
                "{}",
                serde_json::json!({"at": r.at, "account": r.account, "remote": r.remote, "action": r.action, "resource": r.resource, "outcome": r.outcome.as_str()})
            );
        } else {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.at,
                r.account.as_deref().unwrap_or("-"),
                r.remote.as_deref().unwrap_or("-"),
                r.action,
                r.resource,
                r.outcome
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the first administrator when none exists.
pub(crate) async fn bootstrap_admin(meta: &Meta, password_file: &str) -> anyhow::Result<()> {
    if meta.has_admin().await? {
        return Ok(());
    }
    let (password, generated) = if password_file.is_empty() {
        (admin::generate_password()?, true)
    } else {
        let text = std::fs::read_to_string(password_file)
            .with_context(|| format!("auth.admin_password_file: cannot read {password_file}"))?;
        let pw = text.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            bail!("auth.admin_password_file: {password_file} is empty");
        }
        (pw, false)
    };
    if !meta
        .create_account(
            "admin",
            wharf_meta::AccountKind::User,
            Some(&admin::hash_blocking(password.clone()).await?),
            true,
        )
        .await?
    {
        bail!(
            "no administrator exists and the name \"admin\" is taken; create one with \
             `wharf user add NAME --admin`"
        );
    }
    if generated {
        // Printed once, here; it is not stored anywhere in clear.
        eprintln!(
            "\n  created administrator \"admin\" with password {password}\n  \
             (shown once; change it with `wharf user passwd admin --password-stdin`)\n"
        );
    }
    tracing::info!(account = "admin", "created the first administrator");
    Ok(())
}

/// Replaces the configuration file's grants. Every grant is checked by the
/// same grammar as `wharf grant add` and the API, and every problem is
/// reported at once. A subject that does not exist (yet) is only warned
/// about: the file is declarative and applied at every start, and accounts
/// are often created after it is written.
pub(crate) async fn sync_config_grants(
    meta: &Meta,
    grants: &[wharf_config::GrantConfig],
) -> anyhow::Result<()> {
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (i, g) in grants.iter().enumerate() {
        match admin::grant_record(
            format!("config-{i}"),
            &g.subject,
            &g.repositories,
            &g.actions.join(","),
            wharf_meta::GrantOrigin::Config,
        ) {
            Ok(record) => records.push(record),
            Err(e) => problems.push(format!("auth.grants[{i}]: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("invalid configuration:\n{}", problems.join("\n"));
    }
    for (i, record) in records.iter().enumerate() {
        if !admin::subject_exists(meta, record).await? {
            tracing::warn!(
                grant = %format!("auth.grants[{i}]"),
                subject = %admin::subject_string(record),
                "the grant's subject does not exist; it takes effect once it is created"
            );
        }
    }
    meta.replace_config_grants(&records).await?;
    Ok(())
}

/// `wharf auth …`
#[derive(Subcommand)]
pub(crate) enum AuthCommand {
    /// Forget failed sign-ins, so throttled clients may try again at once.
    ///
    /// With --account, that account's failures from every address; with
    /// --address, every failure from that address; with both, that account
    /// from that address; with neither, every failure. Running servers on the
    /// same database apply it within seconds.
    Unlock {
        /// Account name.
        #[arg(long)]
        account: Option<String>,
        /// Client IP address.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
    },
}

pub(crate) async fn auth(meta: &Meta, cmd: AuthCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::Unlock { account, address } => {
            admin::record_unlock(meta, account.as_deref(), address).await?;
            let whom = match (&account, address) {
                (None, None) => "every account and address".to_owned(),
                (Some(a), None) => format!("account {a} from every address"),
                (None, Some(ip)) => format!("every account from {ip}"),
                (Some(a), Some(ip)) => format!("account {a} from {ip}"),
            };
            println!("unlocked {whom}; running servers apply it within seconds");
        }
    }
    Ok(ExitCode::SUCCESS)
}
