//! End-to-end tests: the real `wharf` binary, judged by stock clients.
//!
//! Every test starts its own `wharf serve` on an ephemeral loopback port with a temporary data
//! directory (see `wharf_testkit::WharfServer`) and drives it with skopeo, podman, buildah, oras,
//! cosign or raw HTTP, asserting what the client sees: digests, tag lists, exit codes.
//! A missing client fails the test with an install hint; `scripts/test.sh` installs them all.
//!
//! Harness check: with `WHARF_E2E_TARGET=docker-registry` the same tests run against Debian's
//! `docker-registry` instead, to tell a harness bug from a Wharf bug.
//! Steps that only Wharf has (`wharf check`, `wharf gc`) are then left out.

#[path = "e2e/support.rs"]
mod support;

#[path = "e2e/acme.rs"]
mod acme;
#[path = "e2e/api.rs"]
mod api;
#[path = "e2e/authz.rs"]
mod authz;
#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/buildah.rs"]
mod buildah;
#[path = "e2e/bundle.rs"]
mod bundle;
#[path = "e2e/chunked_uploads.rs"]
mod chunked_uploads;
#[path = "e2e/cosign.rs"]
mod cosign;
#[path = "e2e/files.rs"]
mod files;
#[path = "e2e/full_disk.rs"]
mod full_disk;
#[path = "e2e/gc_race.rs"]
mod gc_race;
#[path = "e2e/guide.rs"]
mod guide;
#[path = "e2e/https_signin.rs"]
mod https_signin;
#[path = "e2e/jobs.rs"]
mod jobs;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/logs.rs"]
mod logs;
#[path = "e2e/lookaside.rs"]
mod lookaside;
#[path = "e2e/mirror.rs"]
mod mirror;
#[path = "e2e/operator.rs"]
mod operator;
#[path = "e2e/oras.rs"]
mod oras;
#[path = "e2e/ostree.rs"]
mod ostree;
#[path = "e2e/ostree_deltas.rs"]
mod ostree_deltas;
#[path = "e2e/ostree_push.rs"]
mod ostree_push;
#[path = "e2e/ostree_retention.rs"]
mod ostree_retention;
#[path = "e2e/persistence.rs"]
mod persistence;
#[path = "e2e/podman.rs"]
mod podman;
#[path = "e2e/pull_through.rs"]
mod pull_through;
#[path = "e2e/pull_times.rs"]
mod pull_times;
#[path = "e2e/raw_server.rs"]
mod raw_server;
#[path = "e2e/repos.rs"]
mod repos;
#[path = "e2e/retention.rs"]
mod retention;
#[path = "e2e/rpm.rs"]
mod rpm;
#[path = "e2e/rpm_hosted.rs"]
mod rpm_hosted;
#[path = "e2e/rpm_mirror.rs"]
mod rpm_mirror;
#[path = "e2e/shutdown.rs"]
mod shutdown;
#[path = "e2e/signin.rs"]
mod signin;
#[path = "e2e/signing.rs"]
mod signing;
#[path = "e2e/skopeo.rs"]
mod skopeo;
#[path = "e2e/streaming.rs"]
mod streaming;
#[path = "e2e/sync_jobs.rs"]
mod sync_jobs;
#[path = "e2e/tag_param.rs"]
mod tag_param;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/trees.rs"]
mod trees;
