//! How upstream names map to endpoints and local repository names: Docker
//! Hub's conventions (`library/` for one-component names, its registry-1
//! endpoint) and the host-named prefix (`quay.io/coreos/etcd`, as seed 001
//! stored it).

/// Host names that mean Docker Hub.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "registry-1.docker.io", "index.docker.io"];

/// The endpoint Docker Hub serves the registry API from.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// Whether `authority` (`host[:port]`) is Docker Hub.
pub fn is_docker_hub(authority: &str) -> bool {
    DOCKER_HUB_HOSTS.contains(&authority.to_ascii_lowercase().as_str())
}

/// The base URL requests go to: Docker Hub's registry-1 endpoint for any of
/// its names, else the configured URL without a trailing `/`.
pub fn endpoint(scheme: &str, authority: &str) -> String {
    if is_docker_hub(authority) {
        format!("https://{DOCKER_HUB_ENDPOINT}")
    } else {
        format!("{scheme}://{authority}")
    }
}

/// The upstream repository as the upstream's API names it: on Docker Hub a
/// one-component name is an official image under `library/`.
pub fn upstream_repository(authority: &str, name: &str) -> String {
    if is_docker_hub(authority) && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_owned()
    }
}

/// The default local prefix: the upstream's host (`docker.io` for any Docker
/// Hub name), with `:PORT` written `_PORT`, since a repository name may not
/// hold a colon.
pub fn default_prefix(authority: &str) -> String {
    if is_docker_hub(authority) {
        return "docker.io".to_owned();
    }
    authority.to_ascii_lowercase().replace(':', "_")
}

/// The local repository name of an upstream repository (already expanded by
/// [`upstream_repository`]).
pub fn local_repository(prefix: &str, upstream: &str) -> String {
    if prefix.is_empty() {
        upstream.to_owned()
    } else {
        format!("{prefix}/{upstream}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_defaults() {
        for host in ["docker.io", "registry-1.docker.io", "Docker.IO"] {
            assert!(is_docker_hub(host), "{host}");
            assert_eq!(endpoint("https", host), "https://registry-1.docker.io");
            assert_eq!(upstream_repository(host, "alpine"), "library/alpine");
            assert_eq!(upstream_repository(host, "bitnami/redis"), "bitnami/redis");
            assert_eq!(default_prefix(host), "docker.io");
        }
        assert_eq!(
            local_repository("docker.io", &upstream_repository("docker.io", "alpine")),
            "docker.io/library/alpine"
        );
    }

    #[test]
    fn other_registries_keep_names_and_are_prefixed_by_host() {
        assert!(!is_docker_hub("quay.io"));
        assert_eq!(endpoint("https", "quay.io"), "https://quay.io");
        assert_eq!(upstream_repository("quay.io", "etcd"), "etcd");
        assert_eq!(
            local_repository(&default_prefix("quay.io"), "coreos/etcd"),
            "quay.io/coreos/etcd"
        );
        assert_eq!(default_prefix("127.0.0.1:5000"), "127.0.0.1_5000");
        assert_eq!(local_repository("", "coreos/etcd"), "coreos/etcd");
        assert_eq!(endpoint("http", "127.0.0.1:5000"), "http://127.0.0.1:5000");
    }
}
