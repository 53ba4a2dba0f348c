//! Credentials for stock clients: one auth file per test process, naming every running Wharf.
//!
//! Wharf refuses anonymous requests, so every client must hold the administrator's credentials
//! for the server it talks to. Clients are built without knowing which server they will talk to
//! (`Tool::find("skopeo").cmd()`), so instead of per-command flags the testkit points them all at
//! one file in the format both client families read: the containers tools (skopeo, podman,
//! buildah) through `REGISTRY_AUTH_FILE`, the Docker-config readers (oras, cosign) through
//! `DOCKER_CONFIG`. Each [`WharfServer`](crate::WharfServer) adds its `127.0.0.1:PORT` entry when
//! it starts, again after a restart on a new port, and removes it when it stops.
//!
//! The file lives in a temporary directory that exists while at least one server does: the
//! static only holds a weak reference, so the last server to go deletes it and nothing is left
//! in `/tmp` after the run. Commands built while no Wharf runs (the docker-registry harness
//! check) get no auth variables, as before; that registry asks for no credentials.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use anyhow::{Context, Result};
use serde_json::json;
use tempfile::TempDir;

/// The directory of the current shared auth file, if any server holds it.
static CURRENT: Mutex<Weak<ClientAuth>> = Mutex::new(Weak::new());

/// The file name: Docker-config readers insist on `config.json` inside `DOCKER_CONFIG`.
const FILE_NAME: &str = "config.json";

/// The shared auth file, and the entries it holds.
pub(crate) struct ClientAuth {
    dir: TempDir,
    /// Host (`127.0.0.1:PORT`) to the base64 of `user:password`. Guarding the map also
    /// serialises writers of the file.
    hosts: Mutex<BTreeMap<String, String>>,
}

impl ClientAuth {
    /// The process's shared auth file, created (empty) if no server holds one now.
    pub(crate) fn shared() -> Result<Arc<ClientAuth>> {
        let mut current = lock(&CURRENT);
        if let Some(auth) = current.upgrade() {
            return Ok(auth);
        }
        let dir = tempfile::Builder::new()
            .prefix("wharf-e2e-client-auth-")
            .tempdir()
            .context("cannot create the clients' auth directory")?;
        let auth = Arc::new(ClientAuth {
            dir,
            hosts: Mutex::new(BTreeMap::new()),
        });
        // An empty file rather than none, so a client never falls back to the host's own.
        auth.write(&BTreeMap::new())?;
        *current = Arc::downgrade(&auth);
        Ok(auth)
    }

    /// Makes clients send `user:password` to `host`, replacing whatever was there: a new server
    /// may reuse the port of one that stopped.
    pub(crate) fn set(&self, host: &str, user: &str, password: &str) -> Result<()> {
        let mut hosts = lock(&self.hosts);
        hosts.insert(
            host.to_owned(),
            base64(format!("{user}:{password}").as_bytes()),
        );
        self.write(&hosts)
    }

    /// Removes `host`'s entry if it still holds `user:password`; another server may own the port
    /// by now, and its entry must stay.
    pub(crate) fn remove(&self, host: &str, user: &str, password: &str) -> Result<()> {
        let mut hosts = lock(&self.hosts);
        let ours = base64(format!("{user}:{password}").as_bytes());
        if hosts.get(host) == Some(&ours) {
            hosts.remove(host);
            self.write(&hosts)?;
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(FILE_NAME)
    }

    /// Rewrites the file atomically (write, then rename): clients of other tests read it
    /// concurrently and must never see half a file.
    fn write(&self, hosts: &BTreeMap<String, String>) -> Result<()> {
        let auths: serde_json::Map<String, serde_json::Value> = hosts
            .iter()
            .map(|(host, auth)| (host.clone(), json!({ "auth": auth })))
            .collect();
        let text = serde_json::to_string_pretty(&json!({ "auths": auths }))?;
        let tmp = self.dir.path().join(format!("{FILE_NAME}.tmp"));
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, self.path())
            .with_context(|| format!("cannot replace {}", self.path().display()))?;
        Ok(())
    }
}

/// Points `cmd` at the shared auth file, when a Wharf server runs in this process.
///
/// Both variables are set whatever the client: each client family ignores the other's.
pub(crate) fn apply(cmd: &mut Command) {
    let Some(auth) = lock(&CURRENT).upgrade() else {
        return;
    };
    cmd.env("REGISTRY_AUTH_FILE", auth.path())
        .env("DOCKER_CONFIG", auth.dir.path());
}

/// Locks `mutex`, carrying on after a panic elsewhere: the data is a map that is only ever
/// replaced whole, so a panicking holder cannot leave it inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Standard base64 with padding (RFC 4648), for HTTP Basic credentials and auth files; the
/// testkit needs only this one encoder, so it carries no base64 dependency.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }
}
