//! Wharf's signing keys from the binary's side: loading them once per
//! process (generated on first use into `<data_dir>/keys/`), the keyrings a
//! remote's `gpg_keys`/`ed25519_keys` name (read at each run, so a rotated
//! key takes effect at the next sync), the public keys the server serves at
//! `/keys/…`, and `wharf signing-key show`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use clap::Subcommand;
use wharf_config::Config;
use wharf_sign::{Keyring, SigningKeys};

/// `wharf signing-key …`
#[derive(Subcommand)]
pub(crate) enum SigningKeyCommand {
    /// Print Wharf's public key: armored OpenPGP (what `/keys/wharf.asc`
    /// serves), or with --ed25519 the base64 ed25519 key (`/keys/wharf.ed25519`).
    Show {
        /// The ed25519 public key instead of the OpenPGP one.
        #[arg(long)]
        ed25519: bool,
    },
}

static KEYS: OnceLock<Arc<SigningKeys>> = OnceLock::new();

/// Wharf's signing keys: the configured ones, else those in
/// `<data_dir>/keys/`, generated there on first use.
pub(crate) fn keys(config: &Config) -> anyhow::Result<Arc<SigningKeys>> {
    if let Some(keys) = KEYS.get() {
        return Ok(keys.clone());
    }
    for (key, path) in [
        ("signing.openpgp_key_file", config.signing.openpgp_key()),
        ("signing.ed25519_key_file", config.signing.ed25519_key()),
    ] {
        if let Some(mode) = path.and_then(crate::serve::loose_mode) {
            eprintln!(
                "warning: {key} {} has mode {mode:o}; group and others should not read a secret key (chmod 600)",
                path.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
    crate::data_dir::refuse_foreign_owner(&config.storage.data_dir)?;
    let keys = SigningKeys::load_or_generate(
        &config.storage.data_dir,
        config.signing.openpgp_key(),
        config.signing.ed25519_key(),
    )
    .context("wharf's signing keys ([signing])")?;
    Ok(KEYS.get_or_init(|| Arc::new(keys)).clone())
}

/// The keyring of a remote's key files; `None` when it names none.
pub(crate) fn trust(
    section: &str,
    name: &str,
    gpg_keys: &[PathBuf],
    ed25519_keys: &[PathBuf],
) -> anyhow::Result<Option<Arc<Keyring>>> {
    if gpg_keys.is_empty() && ed25519_keys.is_empty() {
        return Ok(None);
    }
    let mut ring = Keyring::new();
    for path in gpg_keys {
        ring.add_openpgp_file(path)
            .with_context(|| format!("{section} {name:?}: gpg_keys"))?;
    }
    for path in ed25519_keys {
        ring.add_ed25519_file(path)
            .with_context(|| format!("{section} {name:?}: ed25519_keys"))?;
    }
    Ok(Some(Arc::new(ring)))
}

/// The public halves, as `/keys/…` serves them.
pub(crate) fn public_keys(keys: &SigningKeys) -> anyhow::Result<wharf_http::PublicKeys> {
    Ok(wharf_http::PublicKeys {
        openpgp_armored: keys.openpgp_public_armored()?,
        ed25519_base64: keys.ed25519_public().to_base64(),
    })
}

/// `wharf signing-key …`
pub(crate) fn command(config: &Config, cmd: SigningKeyCommand) -> anyhow::Result<ExitCode> {
    let keys = keys(config)?;
    match cmd {
        SigningKeyCommand::Show { ed25519: false } => {
            print!("{}", keys.openpgp_public_armored()?);
        }
        SigningKeyCommand::Show { ed25519: true } => {
            println!("{}", keys.ed25519_public().to_base64());
        }
    }
    Ok(ExitCode::SUCCESS)
}
