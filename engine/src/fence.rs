//! File access through SQL is fenced: `CREATE EXTERNAL TABLE` may read only under the import root and `COPY … TO`
//! may write only under the export root. Both are off unless configured.

use std::path::{Component, Path, PathBuf};

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
        Some(root) => inside(root, target),
        None => Err(Error::denied(format!(
            "writing server files is disabled: '{target}' cannot be written; start Marrow with --export-root DIR"
        ))),
    }
}
