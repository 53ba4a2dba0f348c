//! Opening the metadata database: who may create a store, what a new SQLite file's modes are,
//! and that a database without Wharf's schema is not mistaken for a store.
//!
//! PostgreSQL comes from `WHARF_TEST_POSTGRES_URL`, as in `meta.rs`; a missing URL fails loudly.

use std::os::unix::fs::PermissionsExt;

use wharf_meta::{Meta, MetaError};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn sqlite_store_is_created_only_by_connect_and_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wharf.db");
    let url = format!("sqlite:{}", db.display());

    match Meta::connect_existing(&url).await {
        Err(MetaError::NoStore(why)) => assert!(why.contains("wharf.db"), "{why}"),
        Err(e) => panic!("expected NoStore, got {e}"),
        Ok(_) => panic!("connect_existing opened a store that does not exist"),
    }
    assert!(!db.exists(), "connect_existing created {}", db.display());

    let meta = Meta::connect(&url).await.unwrap();
    meta.ping().await.unwrap();
    for name in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        let path = dir.path().join(name);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    meta.close().await;

    let meta = Meta::connect_existing(&url).await.unwrap();
    meta.ping().await.unwrap();
    meta.close().await;
}

#[tokio::test]
async fn postgres_database_without_the_schema_is_no_store() {
    let base = std::env::var("WHARF_TEST_POSTGRES_URL").expect(
        "WHARF_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    );
    let admin = Meta::connect(&base).await.unwrap();
    let name = format!("wharf_c_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");

    match Meta::connect_existing(&url).await {
        Err(MetaError::NoStore(why)) => assert!(why.contains("no Wharf schema"), "{why}"),
        Err(e) => panic!("expected NoStore, got {e}"),
        Ok(_) => panic!("connect_existing took an empty database for a store"),
    }
    // Still empty: the refusal ran no migration.
    match Meta::connect_existing(&url).await {
        Err(MetaError::NoStore(_)) => {}
        other => panic!("the refused database changed: {:?}", other.err()),
    }
    let meta = Meta::connect(&url).await.unwrap();
    meta.close().await;
    let meta = Meta::connect_existing(&url).await.unwrap();
    meta.ping().await.unwrap();
    meta.close().await;
}
