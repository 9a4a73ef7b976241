//! The file fence against symlinks and swaps: every file actually opened is checked where it is opened, and SQL
//! never writes into the data directory, even when the export root contains it.

use std::os::unix::fs::symlink;
use std::path::Path;

use marrow_engine::{Config, Database, ErrorKind, Session};

async fn open(dir: &Path, import: &Path, export: &Path) -> (Database, Session) {
    let db = Database::open(Config {
        data_dir: dir.join("data"),
        import_root: Some(import.to_path_buf()),
        export_root: Some(export.to_path_buf()),
        memory_limit: None,
        model_dir: None,
        tokenizers: Default::default(),
        upkeep: None,
        hot_tier: 0,
    })
    .await
    .unwrap();
    let session = db.session();
    (db, session)
}

async fn count(s: &Session, sql: &str) -> Result<i64, marrow_engine::Error> {
    let (_, batches) = s.execute(sql).await?.collect().await?;
    Ok(batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_swaps_cannot_leave_the_import_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, outside) = (tmp.path().join("import"), tmp.path().join("secret"));
    std::fs::create_dir_all(root.join("logs")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.csv"), "a\n41\n42\n43\n").unwrap();
    std::fs::write(root.join("logs/one.csv"), "a\n1\n").unwrap();
    // A listing: one real file and one link to a file outside the root.
    symlink(outside.join("secret.csv"), root.join("logs/two.csv")).unwrap();
    let root = root.canonicalize().unwrap();
    let (_db, s) = open(tmp.path(), &root, &tmp.path().join("export")).await;

    s.execute("CREATE EXTERNAL TABLE logs STORED AS CSV LOCATION 'logs/' OPTIONS ('format.has_header' 'true')")
        .await
        .unwrap();
    // The link is not read: only the file inside the root is.
    assert_eq!(count(&s, "SELECT count(*) FROM logs").await.unwrap(), 1);

    // A file checked when the table was created, swapped for a link afterwards: refused when read.
    std::fs::write(root.join("data.csv"), "a\n1\n2\n").unwrap();
    s.execute("CREATE EXTERNAL TABLE d STORED AS CSV LOCATION 'data.csv' OPTIONS ('format.has_header' 'true')")
        .await
        .unwrap();
    assert_eq!(count(&s, "SELECT count(*) FROM d").await.unwrap(), 2);
    std::fs::remove_file(root.join("data.csv")).unwrap();
    symlink(outside.join("secret.csv"), root.join("data.csv")).unwrap();
    let err = count(&s, "SELECT count(*) FROM d").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // A model directory whose shard is a link outside the root, and an adapter directory whose config is one.
    std::fs::create_dir_all(root.join("model")).unwrap();
    std::fs::write(outside.join("x.safetensors"), b"not read").unwrap();
    symlink(
        outside.join("x.safetensors"),
        root.join("model/x.safetensors"),
    )
    .unwrap();
    let err = s
        .execute("SELECT count(*) FROM read_safetensors('model')")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let err = s
        .execute("CALL import_safetensors('model', 'm')")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    std::fs::create_dir_all(root.join("adapter")).unwrap();
    std::fs::write(outside.join("adapter_config.json"), "{}").unwrap();
    symlink(
        outside.join("adapter_config.json"),
        root.join("adapter/adapter_config.json"),
    )
    .unwrap();
    let err = s
        .execute("CALL import_peft('adapter', 'a')")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_never_write_into_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    // The export root contains the data directory.
    let (db, s) = open(&root, &root, &root).await;
    s.execute("CREATE TABLE t (id BIGINT)").await.unwrap();
    s.execute("INSERT INTO t VALUES (1)").await.unwrap();
    let manifest_dir = db.data_dir().join("t.lance/_versions");
    let before: Vec<_> = std::fs::read_dir(&manifest_dir).unwrap().collect();
    for target in [
        "data/t.lance/_versions/1.manifest",
        "data/.marrow.lock",
        "data/new.parquet",
    ] {
        let err = s
            .execute(&format!("COPY t TO '{target}' STORED AS PARQUET"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{target}: {err}");
        assert!(err.message().contains("inside the data directory"), "{err}");
    }
    let err = s
        .execute("CALL export_safetensors('m', 'data/m.safetensors')")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::PermissionDenied | ErrorKind::NotFound
        ),
        "{err}"
    );
    // A link inside the export root pointing into the data directory is no way in either.
    symlink(db.data_dir(), root.join("door")).unwrap();
    let err = s
        .execute("COPY t TO 'door/x.parquet' STORED AS PARQUET")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let after: Vec<_> = std::fs::read_dir(&manifest_dir).unwrap().collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(count(&s, "SELECT count(*) FROM t").await.unwrap(), 1);
    // Elsewhere under the root, exports work.
    s.execute("COPY t TO 'out/t.parquet' STORED AS PARQUET")
        .await
        .unwrap();
    assert!(root.join("out/t.parquet").exists());
}
