//! File access through SQL is fenced: `CREATE EXTERNAL TABLE`, `read_safetensors` and the import procedures may read
//! only under the import root, and `COPY … TO` and the export procedures may write only under the export root, never
//! inside the data directory. Both are off unless configured.
//!
//! A path named in a statement is checked when the statement runs ([`check_import`], [`check_export`]), and then
//! every file actually opened is checked again where it is opened: each file a listing or a glob finds, each shard
//! of a model directory, each file of an adapter directory, at read time ([`open_inside`], [`FencedFiles`]). A
//! symlink inside the root that points outside it, or a checked file swapped for such a link afterwards, is refused.

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::config::Config;
use crate::error::{Error, Result};

/// Resolve `location` lexically and through any existing symlinks, then require it to be inside `root`.
fn inside(root: &Path, location: &str) -> Result<PathBuf> {
    let raw = location.strip_prefix("file://").unwrap_or(location);
    if raw.contains("://") {
        return Err(Error::denied(format!(
            "'{location}': only local paths under the configured root are allowed"
        )));
    }
    let path = Path::new(raw);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let mut normal = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    // Follow symlinks of the longest existing prefix so a link inside the root cannot point outside it.
    let mut existing = normal.clone();
    let mut rest = vec![];
    while !existing.exists() {
        match (
            existing.file_name().map(|s| s.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    for part in rest.into_iter().rev() {
        resolved.push(part);
    }
    if resolved.starts_with(root) {
        Ok(resolved)
    } else {
        Err(Error::denied(format!(
            "'{location}' is outside the allowed root {}",
            root.display()
        )))
    }
}

pub fn check_import(config: &Config, location: &str) -> Result<PathBuf> {
    match &config.import_root {
        Some(root) => inside(root, location),
        None => Err(Error::denied(format!(
            "reading server files is disabled: '{location}' cannot be read; start Marrow with --import-root DIR"
        ))),
    }
}

pub fn check_export(config: &Config, target: &str) -> Result<PathBuf> {
    match &config.export_root {
        Some(root) => {
            let path = inside(root, target)?;
            outside_data(&config.data_dir, &path, target)?;
            Ok(path)
        }
        None => Err(Error::denied(format!(
            "writing server files is disabled: '{target}' cannot be written; start Marrow with --export-root DIR"
        ))),
    }
}

/// Nothing is ever written into the data directory from SQL (a table's manifest, the lock file), even when the
/// export root contains it.
fn outside_data(data_dir: &Path, path: &Path, shown: &str) -> Result<()> {
    if path.starts_with(data_dir) {
        return Err(Error::denied(format!(
            "'{shown}' is inside the data directory, which SQL never writes into; export elsewhere"
        )));
    }
    Ok(())
}

/// Where an open file really is: the kernel's name for the descriptor (so a link swapped in after a check is seen),
/// else its canonical path.
fn opened_path(file: &File, path: &Path) -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(p);
        }
    }
    let _ = file;
    path.canonicalize()
}

/// Open a file for reading; with a `root`, the file actually opened (symlinks followed) must be inside it.
pub fn open_inside(root: Option<&Path>, path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            crate::error::ErrorKind::NotFound
        } else {
            crate::error::ErrorKind::PermissionDenied
        };
        Error::new(kind, format!("cannot open {}: {e}", path.display()))
    })?;
    if let Some(root) = root {
        let real = opened_path(&file, path)?;
        if !real.starts_with(root) {
            return Err(Error::denied(format!(
                "{} leads outside the allowed root {} (to {}): symlinks may not leave it",
                path.display(),
                root.display(),
                real.display()
            )));
        }
    }
    Ok(file)
}

/// Whether an existing file or directory really (symlinks followed) is inside `root`.
pub fn is_inside(root: &Path, path: &Path) -> bool {
    path.canonicalize().is_ok_and(|p| p.starts_with(root))
}

/// The local file system as DataFusion's listing tables and `COPY … TO` see it: reads only under the import root,
/// writes only under the export root and outside the data directory, checked for every file touched when it is
/// touched. Files a listing finds that lead outside the root are left out of it.
#[derive(Debug)]
pub struct FencedFiles {
    inner: LocalFileSystem,
    read_root: Option<PathBuf>,
    write_root: Option<PathBuf>,
    data_dir: PathBuf,
}

impl std::fmt::Display for FencedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FencedFiles({})", self.inner)
    }
}

impl FencedFiles {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            inner: LocalFileSystem::new(),
            read_root: config.import_root.clone(),
            write_root: config.export_root.clone(),
            data_dir: config.data_dir.clone(),
        })
    }

    fn denied(location: &ObjectPath, why: String) -> object_store::Error {
        object_store::Error::PermissionDenied {
            path: location.to_string(),
            source: why.into(),
        }
    }

    fn check_read(&self, location: &ObjectPath) -> object_store::Result<()> {
        let path = self.inner.path_to_filesystem(location)?;
        let Some(root) = &self.read_root else {
            return Err(Self::denied(
                location,
                "reading server files is disabled".into(),
            ));
        };
        match path.canonicalize() {
            Ok(real) if real.starts_with(root) => Ok(()),
            Ok(real) => Err(Self::denied(
                location,
                format!(
                    "leads outside the import root {} (to {})",
                    root.display(),
                    real.display()
                ),
            )),
            // Missing: the inner store reports it as such.
            Err(_) => Ok(()),
        }
    }

    fn check_write(&self, location: &ObjectPath) -> object_store::Result<()> {
        write_allowed(&self.write_root, &self.data_dir, location)
    }
}

fn write_allowed(
    write_root: &Option<PathBuf>,
    data_dir: &Path,
    location: &ObjectPath,
) -> object_store::Result<()> {
    let path = LocalFileSystem::new().path_to_filesystem(location)?;
    let Some(root) = write_root else {
        return Err(FencedFiles::denied(
            location,
            "writing server files is disabled".into(),
        ));
    };
    let shown = path.to_string_lossy().into_owned();
    inside(root, &shown)
        .and_then(|p| outside_data(data_dir, &p, &shown))
        .map_err(|e| FencedFiles::denied(location, e.message().to_string()))
}

#[async_trait]
impl ObjectStore for FencedFiles {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check_write(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check_write(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check_read(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.check_read(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        // Only the export side deletes (an abandoned multipart write): each path is checked as a write.
        let (root, data_dir) = (self.write_root.clone(), self.data_dir.clone());
        let checked = locations.map(move |l| {
            let l = l?;
            write_allowed(&root, &data_dir, &l)?;
            Ok(l)
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        // A directory outside the root is refused, not listed as empty.
        if let Some(p) = prefix {
            if let Err(e) = self.check_read(p) {
                return futures::stream::once(async move { Err(e) }).boxed();
            }
        }
        let root = self.read_root.clone();
        let store = LocalFileSystem::new();
        self.inner
            .list(prefix)
            .filter(move |item| {
                let keep = match (item, &root) {
                    (Ok(meta), Some(root)) => store
                        .path_to_filesystem(&meta.location)
                        .is_ok_and(|p| is_inside(root, &p)),
                    (Ok(_), None) => false,
                    (Err(_), _) => true,
                };
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        let Some(root) = &self.read_root else {
            return Err(Self::denied(
                prefix.unwrap_or(&ObjectPath::default()),
                "reading server files is disabled".into(),
            ));
        };
        if let Some(p) = prefix {
            self.check_read(p)?;
        }
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let inside_root = |p: &ObjectPath| {
            self.inner
                .path_to_filesystem(p)
                .is_ok_and(|p| is_inside(root, &p))
        };
        listed.objects.retain(|m| inside_root(&m.location));
        listed.common_prefixes.retain(|p| inside_root(p));
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check_read(from)?;
        self.check_write(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
