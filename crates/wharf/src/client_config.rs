//! `wharf client-config`: what container engines need to pull through this
//! server unchanged, printed from the same configuration `serve` reads, so the
//! names they use and the names Wharf serves cannot drift apart.
//!
//! - containers-registries.conf(5) (podman, buildah, skopeo, CRI-O): one
//!   `[[registry]]` per upstream host with a mirror at `WHARF/PREFIX`, the
//!   host-prefixed name the pull-through cache answers.
//! - containerd `hosts.toml`, one per upstream host (`--hosts-dir` layout:
//!   `DIR/<host>/hosts.toml`): Wharf as a pull/resolve host in front of the
//!   upstream's `server`; containerd adds `?ns=<host>`, which Wharf resolves.
//! - docker `daemon.json` `registry-mirrors`: docker mirrors Docker Hub only,
//!   and sends no namespace, so it works only for a Docker Hub remote with
//!   `prefix = ""`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use wharf_config::{remote_authority, Config};
use wharf_mirror::names;

/// One upstream as the clients see it.
struct Upstream {
    /// The remote's name.
    name: String,
    /// How image references name it (`docker.io`, `quay.io`, `host:port`).
    host: String,
    /// Where its registry API answers (`https://registry-1.docker.io`).
    endpoint: String,
    /// Plain HTTP upstream.
    insecure: bool,
    /// Local prefix of its mirrored repositories.
    prefix: String,
}

/// The files, by relative path, in the order printed.
pub(crate) struct ClientFiles {
    files: Vec<(String, String)>,
}

/// `scheme`, `host[:port]` clients reach this server at: `server.external_url`,
/// else `server.listen` with the listener's scheme.
fn server_address(config: &Config) -> anyhow::Result<(String, String)> {
    if !config.server.external_url.is_empty() {
        let url = config.server.external_url.trim_end_matches('/');
        let (scheme, authority) = url
            .split_once("://")
            .with_context(|| format!("server.external_url {url:?} has no scheme"))?;
        return Ok((scheme.to_owned(), authority.to_owned()));
    }
    let listen = &config.server.listen;
    let port = listen.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    let host = listen.rsplit_once(':').map_or(listen.as_str(), |(h, _)| h);
    if matches!(host, "0.0.0.0" | "[::]" | "::") {
        bail!(
            "server.listen is {listen}, which clients cannot reach by that address; \
             set server.external_url to the URL they use (e.g. https://wharf.example:{port})"
        );
    }
    let scheme = if config.tls.enabled() {
        "https"
    } else {
        "http"
    };
    Ok((scheme.to_owned(), listen.clone()))
}

fn upstreams(config: &Config) -> anyhow::Result<Vec<Upstream>> {
    let mut out = Vec::new();
    for remote in &config.mirror.remotes {
        let (scheme, authority) = remote_authority(&remote.url)
            .with_context(|| format!("mirror.remotes {:?}: url", remote.name))?;
        let host = if names::is_docker_hub(authority) {
            "docker.io".to_owned()
        } else {
            authority.to_ascii_lowercase()
        };
        out.push(Upstream {
            name: remote.name.clone(),
            host,
            endpoint: names::endpoint(scheme, authority),
            insecure: scheme == "http",
            prefix: remote
                .prefix
                .clone()
                .unwrap_or_else(|| names::default_prefix(authority)),
        });
    }
    Ok(out)
}

impl ClientFiles {
    /// Every file for `config`'s remotes.
    pub(crate) fn build(config: &Config) -> anyhow::Result<ClientFiles> {
        let (scheme, server) = server_address(config)?;
        let upstreams = upstreams(config)?;
        if upstreams.is_empty() {
            bail!("no [[mirror.remotes]] configured: there is nothing to pull through");
        }
        let plain = scheme == "http";
        let mut files = Vec::new();

        let mut conf = String::from(
            "# containers-registries.conf(5), written by `wharf client-config`.\n\
             # Put it in /etc/containers/registries.conf.d/ (or point CONTAINERS_REGISTRIES_CONF\n\
             # at it): pulls of these hosts try Wharf first, then the upstream itself.\n",
        );
        for u in &upstreams {
            let location = if u.prefix.is_empty() {
                server.clone()
            } else {
                format!("{server}/{}", u.prefix)
            };
            let _ = write!(
                conf,
                "\n# {}\n[[registry]]\nprefix = \"{}\"\nlocation = \"{}\"\n",
                u.name, u.host, u.host
            );
            if u.insecure {
                conf.push_str("insecure = true\n");
            }
            let _ = write!(conf, "\n[[registry.mirror]]\nlocation = \"{location}\"\n");
            if plain {
                conf.push_str("insecure = true\n");
            }
        }
        files.push(("registries.conf".to_owned(), conf));

        for u in &upstreams {
            let mut hosts = format!(
                "# containerd hosts.toml for {host}, written by `wharf client-config`.\n\
                 # Install as <hosts dir>/{host}/hosts.toml (config_path of the CRI plugin's\n\
                 # registry, e.g. /etc/containerd/certs.d, or `ctr images pull --hosts-dir`).\n\
                 server = \"{}\"\n\n[host.\"{scheme}://{server}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                u.endpoint,
                host = u.host,
            );
            if plain {
                hosts.push_str("  # Wharf speaks plain HTTP here: the scheme above says so.\n");
            }
            files.push((format!("certs.d/{}/hosts.toml", u.host), hosts));
        }

        let hub = upstreams.iter().find(|u| u.host == "docker.io");
        let daemon = match hub {
            Some(u) if u.prefix.is_empty() => format!(
                "{{\n  \"registry-mirrors\": [\"{scheme}://{server}\"]{}\n}}\n",
                if plain {
                    format!(",\n  \"insecure-registries\": [\"{server}\"]")
                } else {
                    String::new()
                }
            ),
            _ => String::new(),
        };
        if !daemon.is_empty() {
            files.push(("daemon.json".to_owned(), daemon));
        }
        Ok(ClientFiles { files })
    }

    /// What docker users should know, when no daemon.json could be written.
    fn docker_note(&self, config: &Config) -> Option<String> {
        if self.files.iter().any(|(p, _)| p == "daemon.json") {
            return None;
        }
        let hub = config
            .mirror
            .remotes
            .iter()
            .find(|r| remote_authority(&r.url).is_some_and(|(_, a)| names::is_docker_hub(a)));
        Some(match hub {
            None => "docker: no daemon.json: docker's registry-mirrors mirror Docker Hub only, \
                     and no [[mirror.remotes]] is Docker Hub"
                .to_owned(),
            Some(r) => format!(
                "docker: no daemon.json: docker's registry-mirrors send no namespace, so Wharf \
                 can serve Docker Hub to docker only from unprefixed names; set prefix = \"\" \
                 on [[mirror.remotes]] {:?} (podman and containerd need no such change)",
                r.name
            ),
        })
    }

    /// Prints every file under a heading naming where it goes.
    pub(crate) fn print(&self, config: &Config) {
        for (path, text) in &self.files {
            println!("### {path}");
            print!("{text}");
            println!();
        }
        if let Some(note) = self.docker_note(config) {
            println!("# {note}");
        }
    }

    /// Writes every file under `dir` (`registries.conf`, `certs.d/<host>/hosts.toml`
    /// — a `--hosts-dir` — and `daemon.json`), and says what went where.
    pub(crate) fn write(&self, config: &Config, dir: &Path) -> anyhow::Result<()> {
        for (path, text) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&target, text)
                .with_context(|| format!("cannot write {}", target.display()))?;
            println!("wrote {}", target.display());
        }
        println!(
            "containerd: ctr images pull --hosts-dir {} …, or set the CRI plugin's \
             registry config_path to it",
            dir.join("certs.d").display()
        );
        if let Some(note) = self.docker_note(config) {
            println!("{note}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(toml: &str) -> Vec<(String, String)> {
        let config = Config::parse(toml, "x.toml").unwrap();
        ClientFiles::build(&config).unwrap().files
    }

    #[test]
    fn prefixes_mirrors_and_hosts() {
        let f = files(
            "[server]\nexternal_url = \"https://wharf.example\"\n\
             [[mirror.remotes]]\nname = \"quay\"\nurl = \"https://quay.io\"\n\
             [[mirror.remotes]]\nname = \"hub\"\nurl = \"https://registry-1.docker.io\"\nprefix = \"\"\n",
        );
        let conf = &f[0].1;
        assert!(conf.contains("prefix = \"quay.io\"\nlocation = \"quay.io\""));
        assert!(conf.contains("[[registry.mirror]]\nlocation = \"wharf.example/quay.io\""));
        assert!(conf.contains("[[registry.mirror]]\nlocation = \"wharf.example\"\n"));
        assert!(!conf.contains("insecure"));
        assert_eq!(f[1].0, "certs.d/quay.io/hosts.toml");
        assert!(f[1].1.contains("server = \"https://quay.io\""));
        assert!(f[1].1.contains("[host.\"https://wharf.example\"]"));
        assert_eq!(f[2].0, "certs.d/docker.io/hosts.toml");
        assert!(f[2].1.contains("server = \"https://registry-1.docker.io\""));
        assert_eq!(f[3].0, "daemon.json");
        assert!(f[3]
            .1
            .contains("\"registry-mirrors\": [\"https://wharf.example\"]"));
    }

    #[test]
    fn plain_http_listener_and_upstream() {
        let f = files(
            "[server]\nlisten = \"127.0.0.1:5999\"\n\
             [[mirror.remotes]]\nname = \"up\"\nurl = \"http://127.0.0.1:5000\"\ninsecure_http = true\n",
        );
        let conf = &f[0].1;
        assert!(conf.contains(
            "location = \"127.0.0.1:5000\"\ninsecure = true\n\n[[registry.mirror]]\n\
             location = \"127.0.0.1:5999/127.0.0.1_5000\"\ninsecure = true\n"
        ));
        assert_eq!(f[1].0, "certs.d/127.0.0.1:5000/hosts.toml");
        assert!(f[1].1.contains("[host.\"http://127.0.0.1:5999\"]"));
        // No Docker Hub remote: no daemon.json.
        assert_eq!(f.len(), 2);
    }
}

/// `wharf client-config dnf|kickstart`: what a dnf client or an installer
/// needs to use one of this server's RPM or file repositories.
#[derive(clap::Subcommand)]
pub(crate) enum RepoClientConfig {
    /// Print a dnf `.repo` file for the RPM repository REPO (served at /rpm/REPO/).
    Dnf {
        /// The RPM repository.
        #[arg(long)]
        repo: String,
        /// The signing keys' URLs for `gpgkey=` (space-separated); default: Wharf's own key,
        /// `<server>/keys/wharf.asc`, which signs hosted repositories' repomd.xml. A mirror
        /// serves upstream's repomd.xml.asc and packages: give the upstream's key then.
        #[arg(long)]
        gpgkey: Option<String>,
    },
    /// Print the kickstart `url` line for the install tree in the file repository REPO.
    Kickstart {
        /// The file repository (served at /files/REPO/).
        #[arg(long)]
        repo: String,
        /// The tree's directory inside the repository; default: its root.
        #[arg(long)]
        path: Option<String>,
    },
    /// Print the `ostree remote add` command, the remote's config section and the
    /// kickstart `ostreesetup` line for the OSTree repository REPO (served at /ostree/REPO/).
    Ostree {
        /// The OSTree repository.
        #[arg(long)]
        repo: String,
        /// The remote's name on the client; default: REPO with `/` written `-`.
        #[arg(long)]
        remote: Option<String>,
        /// The ref kickstart deploys; default: the mirror's one named ref, if it has one.
        #[arg(long = "ref")]
        ref_name: Option<String>,
        /// `ostreesetup --osname`; default: the remote's name.
        #[arg(long)]
        osname: Option<String>,
    },
}

/// The text `wharf client-config dnf|kickstart|ostree` prints.
pub(crate) fn repo_client_config(
    config: &Config,
    what: &RepoClientConfig,
) -> anyhow::Result<String> {
    let (scheme, authority) = server_address(config)?;
    let base = format!("{scheme}://{authority}");
    match what {
        RepoClientConfig::Dnf { repo, gpgkey } => {
            let repo = wharf_core::RepoName::parse(repo)
                .with_context(|| format!("repository name {repo:?}"))?;
            let id: String = repo
                .as_str()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let mirrored_by = config
                .rpm
                .remotes
                .iter()
                .find(|r| r.repository == repo.as_str());
            let key = gpgkey
                .clone()
                .unwrap_or_else(|| format!("{base}/keys/wharf.asc"));
            let note = match (mirrored_by, gpgkey) {
                (Some(remote), None) if remote.regenerates_metadata() => format!(
                    "# {repo} mirrors remote {:?} with metadata wharf writes and signs (gpgkey= \
                     below); its packages keep the upstream's signatures: add that key's URL \
                     to gpgkey=, after wharf's\n",
                    remote.name
                ),
                (Some(remote), None) => format!(
                    "# {repo} mirrors remote {:?}: its repomd.xml.asc and packages are signed by \
                     the upstream's key; put that key's URL in gpgkey= (or pass --gpgkey)\n",
                    remote.name
                ),
                _ => String::new(),
            };
            Ok(format!(
                "{note}[{id}]\nname={repo} (wharf at {authority})\nbaseurl={base}/rpm/{repo}/\n\
                 enabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey={key}\n"
            ))
        }
        RepoClientConfig::Kickstart { repo, path } => {
            let repo = wharf_core::RepoName::parse(repo)
                .with_context(|| format!("repository name {repo:?}"))?;
            let dir = match path.as_deref().map(|p| p.trim_matches('/')) {
                Some(p) if !p.is_empty() => {
                    let p = wharf_core::TreePath::new(p)
                        .with_context(|| format!("path {p:?} in the repository"))?;
                    format!("{p}/")
                }
                _ => String::new(),
            };
            Ok(format!("url --url={base}/files/{repo}/{dir}\n"))
        }
        RepoClientConfig::Ostree {
            repo,
            remote,
            ref_name,
            osname,
        } => ostree_client_config(
            config,
            &base,
            repo,
            remote.as_deref(),
            ref_name.as_deref(),
            osname.as_deref(),
        ),
    }
}

/// What stock ostree and Anaconda need for one OSTree repository. Which key
/// verifies what depends on how the repository is filled: a mirror of all refs
/// serves the upstream's summary and commits, both signed by the upstream's key;
/// a mirror of some refs serves the upstream's commits under Wharf's own summary,
/// signed with Wharf's key; a hosted repository is Wharf's alone.
fn ostree_client_config(
    config: &Config,
    base: &str,
    repo: &str,
    remote: Option<&str>,
    ref_name: Option<&str>,
    osname: Option<&str>,
) -> anyhow::Result<String> {
    let repo =
        wharf_core::RepoName::parse(repo).with_context(|| format!("repository name {repo:?}"))?;
    let remote = match remote {
        Some(r) => r.to_owned(),
        None => repo.as_str().replace('/', "-"),
    };
    if remote.is_empty()
        || !remote
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("remote name {remote:?}: use letters, digits, '-', '_' and '.'");
    }
    let osname = osname.unwrap_or(&remote);
    if osname.is_empty()
        || !osname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("osname {osname:?}: use letters, digits, '-', '_' and '.'");
    }
    let mirror = config
        .ostree
        .remotes
        .iter()
        .find(|r| r.repository == repo.as_str());
    let all_refs = mirror.is_some_and(|m| m.refs.is_empty() || m.refs.iter().any(|r| r == "*"));
    let ref_name = match ref_name {
        Some(r) => Some(r.to_owned()),
        None => mirror.and_then(|m| match m.refs.as_slice() {
            [one] if !one.contains(['*', '?']) => Some(one.clone()),
            _ => None,
        }),
    };
    if let Some(r) = &ref_name {
        if !wharf_ostree::object::validate_ref_name(r) {
            bail!("ref {r:?} is not a valid ref name");
        }
    }
    let url = format!("{base}/ostree/{repo}/");
    let wharf_key = format!("{base}/keys/wharf.asc");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# OSTree repository {repo}, written by `wharf client-config ostree`."
    );
    let key_file = match mirror {
        Some(m) if all_refs => {
            let _ = writeln!(
                out,
                "# A mirror of every ref of {:?} ({}): its summary and commits are the upstream's,\n\
                 # signed by the upstream's key. Export that key as upstream-key.asc (for example\n\
                 # `gpg --armor --export KEYID > upstream-key.asc` on the upstream's signing host).",
                m.name, m.url
            );
            "upstream-key.asc"
        }
        Some(m) => {
            let _ = writeln!(
                out,
                "# A mirror of some refs of {:?} ({}): the commits are signed by the upstream's key,\n\
                 # the summary by Wharf's ({wharf_key}). Import both: put the upstream's key\n\
                 # beside Wharf's in one file, or run `ostree remote gpg-import {remote} -k FILE`\n\
                 # for the upstream's.\n\
                 curl -fsSL -o wharf.asc {wharf_key}",
                m.name, m.url
            );
            "wharf.asc"
        }
        None => {
            let _ = writeln!(
                out,
                "# Hosted here: commits and summary are signed with Wharf's key.\n\
                 curl -fsSL -o wharf.asc {wharf_key}"
            );
            "wharf.asc"
        }
    };
    let _ = writeln!(
        out,
        "ostree remote add --set=gpg-verify=true --set=gpg-verify-summary=true \
         --gpg-import={key_file} {remote} {url}"
    );
    let _ = writeln!(
        out,
        "\n# The same remote in /etc/ostree/remotes.d/{remote}.conf (or the repository's config);\n\
         # its keys then go in /etc/pki/ostree/{remote}.gpg (or /etc/ostree/remotes.d/{remote}.gpg).\n\
         [remote \"{remote}\"]\nurl={url}\ngpg-verify=true\ngpg-verify-summary=true"
    );
    let _ = writeln!(
        out,
        "\n# Kickstart (Anaconda verifies with the keys its image carries in /etc/pki/ostree/)."
    );
    match &ref_name {
        Some(r) => {
            let _ = writeln!(
                out,
                "ostreesetup --osname={osname} --remote={remote} --url={url} --ref={r}"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# name the ref to deploy with --ref to get this line filled in:\n\
                 # ostreesetup --osname={osname} --remote={remote} --url={url} --ref=REF"
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod repo_client_config_tests {
    use super::*;

    #[test]
    fn dnf_and_kickstart() {
        let config = Config::parse(
            "[server]\nexternal_url = \"https://wharf.example\"\n",
            "x.toml",
        )
        .unwrap();
        let dnf = repo_client_config(
            &config,
            &RepoClientConfig::Dnf {
                repo: "fedora/40".into(),
                gpgkey: None,
            },
        )
        .unwrap();
        assert!(dnf.starts_with("[fedora-40]\n"), "{dnf}");
        assert!(
            dnf.contains("gpgkey=https://wharf.example/keys/wharf.asc\n"),
            "{dnf}"
        );
        assert!(dnf.contains("baseurl=https://wharf.example/rpm/fedora/40/\n"));
        assert!(dnf.contains("repo_gpgcheck=1\n"));

        let ks = repo_client_config(
            &config,
            &RepoClientConfig::Kickstart {
                repo: "os".into(),
                path: Some("releases/f40/".into()),
            },
        )
        .unwrap();
        assert_eq!(
            ks,
            "url --url=https://wharf.example/files/os/releases/f40/\n"
        );
        assert!(repo_client_config(
            &config,
            &RepoClientConfig::Kickstart {
                repo: "os".into(),
                path: Some("../etc".into()),
            },
        )
        .is_err());
    }

    #[test]
    fn ostree_remote_and_kickstart() {
        let config = Config::parse(
            "[server]\nexternal_url = \"https://wharf.example\"\n\
             [[ostree.remotes]]\nname = \"fedora\"\nurl = \"https://ostree.example/repo\"\n\
             repository = \"os/fedora\"\nrefs = [\"fedora/x86_64/silverblue\"]\n",
            "x.toml",
        )
        .unwrap();
        let ostree = |repo: &str, ref_name: Option<&str>| {
            repo_client_config(
                &config,
                &RepoClientConfig::Ostree {
                    repo: repo.into(),
                    remote: None,
                    ref_name: ref_name.map(str::to_owned),
                    osname: None,
                },
            )
        };
        let subset = ostree("os/fedora", None).unwrap();
        assert!(
            subset.contains(
                "ostree remote add --set=gpg-verify=true --set=gpg-verify-summary=true \
                 --gpg-import=wharf.asc os-fedora https://wharf.example/ostree/os/fedora/\n"
            ),
            "{subset}"
        );
        assert!(subset.contains("curl -fsSL -o wharf.asc https://wharf.example/keys/wharf.asc\n"));
        assert!(subset.contains("upstream's key"), "{subset}");
        assert!(subset.contains(
            "[remote \"os-fedora\"]\nurl=https://wharf.example/ostree/os/fedora/\ngpg-verify=true\n"
        ));
        assert!(subset.contains(
            "ostreesetup --osname=os-fedora --remote=os-fedora \
             --url=https://wharf.example/ostree/os/fedora/ --ref=fedora/x86_64/silverblue\n"
        ));
        let hosted = ostree("os/mine", None).unwrap();
        assert!(
            hosted.contains("# ostreesetup --osname=os-mine"),
            "{hosted}"
        );
        assert!(hosted.contains("signed with Wharf's key"));
        assert!(ostree("os/mine", Some("a b")).is_err());
        assert!(ostree("os/mine", Some("../x")).is_err());
        assert!(ostree("../x", None).is_err());
    }
}
