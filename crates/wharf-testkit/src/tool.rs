//! Locating stock clients, and running podman and buildah with private storage.
//!
//! Clients come from Debian packages on `PATH`, or from the repository's `.tools/bin`, which
//! `scripts/test.sh` fills with the clients Debian bookworm lacks (oras, cosign).
//! A missing client panics with the command that installs it: the suite never skips.
//!
//! Every command a [`Tool`] builds carries the credentials of the Wharf servers that run in this
//! process (Wharf refuses anonymous clients), so tests never pass credentials themselves.
//!
//! Podman and buildah keep images in a storage directory; each [`Podman`] and [`Buildah`] gets
//! its own temporary one so tests neither see nor break the host's images, and so parallel tests
//! do not contend for one storage lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::client_auth;

/// A stock client binary, found on disk.
#[derive(Debug, Clone)]
pub struct Tool {
    name: &'static str,
    path: PathBuf,
}

impl Tool {
    /// Finds `name` in `.tools/bin` or on `PATH`, and panics with an install hint when absent.
    pub fn find(name: &'static str) -> Tool {
        match locate(name) {
            Some(path) => Tool { name, path },
            None => panic!(
                "required test tool `{name}` was not found in {} or on PATH; {}",
                tools_bin_dir().display(),
                install_hint(name)
            ),
        }
    }

    /// The client's name, as given to [`Tool::find`].
    pub fn name(&self) -> &str {
        self.name
    }

    /// Where the binary is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command for this client with no arguments yet, holding the credentials of every Wharf
    /// server running in this process (see `REGISTRY_AUTH_FILE` and `DOCKER_CONFIG` in
    /// [`WharfServer`](crate::WharfServer)).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        client_auth::apply(&mut cmd);
        cmd
    }
}

/// The directory where `scripts/test.sh` links clients that Debian bookworm does not package.
///
/// `WHARF_TOOLS_BIN` overrides it, for running the suite from another checkout.
pub fn tools_bin_dir() -> PathBuf {
    if let Some(dir) = env::var_os("WHARF_TOOLS_BIN") {
        return PathBuf::from(dir);
    }
    // This crate sits at crates/wharf-testkit, so the repository root is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin")
}

fn locate(name: &str) -> Option<PathBuf> {
    let mut dirs = vec![tools_bin_dir()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    // Root's PATH in a minimal environment can lack the sbin directories Debian uses.
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn install_hint(name: &str) -> String {
    match name {
        "oras" | "cosign" => format!(
            "run scripts/test.sh, which fetches `{name}` from Debian trixie into .tools/bin"
        ),
        "docker-registry" => "install it with `apt-get install docker-registry`".to_owned(),
        _ => format!(
            "install it with `apt-get install {name}` (scripts/test.sh installs every test tool)"
        ),
    }
}

/// Podman with a private storage root, so it never touches the host's images.
pub struct Podman {
    tool: Tool,
    dir: TempDir,
}

impl Podman {
    /// Creates empty private storage; panics like [`Tool::find`] when podman is missing.
    pub fn new() -> Result<Podman> {
        let tool = Tool::find("podman");
        let dir = private_storage_dir("podman")?;
        Ok(Podman { tool, dir })
    }

    /// A podman command with the private-storage flags already set.
    pub fn cmd(&self) -> Command {
        let mut cmd = self.tool.cmd();
        let root = self.dir.path();
        // vfs needs no kernel overlay support or fuse; cgroupfs and a file events backend are
        // needed because the test machine (a container, as root) runs no systemd.
        cmd.arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--tmpdir")
            .arg(root.join("libpod-tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"]);
        isolate_env(&mut cmd, root);
        cmd
    }
}

/// Buildah with a private storage root, like [`Podman`].
pub struct Buildah {
    tool: Tool,
    dir: TempDir,
}

impl Buildah {
    /// Creates empty private storage; panics like [`Tool::find`] when buildah is missing.
    pub fn new() -> Result<Buildah> {
        let tool = Tool::find("buildah");
        let dir = private_storage_dir("buildah")?;
        Ok(Buildah { tool, dir })
    }

    /// A buildah command with the private-storage flags already set.
    pub fn cmd(&self) -> Command {
        let mut cmd = self.tool.cmd();
        let root = self.dir.path();
        cmd.arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "vfs"]);
        isolate_env(&mut cmd, root);
        cmd
    }
}

fn private_storage_dir(tool: &str) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("wharf-e2e-{tool}-"))
        .tempdir()
        .context("cannot create private storage directory")?;
    for sub in ["root", "run", "libpod-tmp", "tmp"] {
        std::fs::create_dir_all(dir.path().join(sub))?;
    }
    // A private storage.conf: the host's may name a driver or options (overlay, a fuse mount
    // program) that would conflict with the private vfs root. podman insists that it names both
    // roots, even though the command-line flags name them too.
    let conf = format!(
        "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
        dir.path().join("run").display(),
        dir.path().join("root").display()
    );
    std::fs::write(dir.path().join("storage.conf"), conf)?;
    Ok(dir)
}

fn isolate_env(cmd: &mut Command, root: &Path) {
    // Image copies stage layers in TMPDIR (default /var/tmp); keep them inside the private dir so
    // parallel tests and an aborted run leave nothing behind.
    cmd.env("TMPDIR", root.join("tmp"))
        .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"));
}
