//! Durable writes: a file and its directory entry fsynced before the state journal refers to
//! them.

use std::path::{Path, PathBuf};

use super::SinkError;

/// Writes a whole staged file (creating its directory) and fsyncs it.
///
/// # Errors
/// [`SinkError::Io`] naming the file.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), SinkError> {
    use std::io::Write;
    let io = |action, source| SinkError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating directory", e))?;
    }
    let mut f = std::fs::File::create(path).map_err(|e| io("creating", e))?;
    f.write_all(data).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))
}

/// Fsyncs the directories of `paths` (relative to `out_dir`), each once: staged files' entries
/// must be durable before the journal refers to them.
///
/// # Errors
/// [`SinkError::State`] wrapping the I/O error.
pub fn sync_parents<'a>(
    out_dir: &Path,
    paths: impl Iterator<Item = &'a str>,
) -> Result<(), SinkError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        if let Some(d) = out_dir.join(p).parent()
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_owned());
        }
    }
    for d in dirs {
        crate::state::sync_dir(&d)?;
    }
    Ok(())
}

/// Creates `dir` (and its parents).
///
/// # Errors
/// [`SinkError::Io`] naming the directory.
pub fn create_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
        action: "creating directory",
        path: dir.to_owned(),
        source,
    })
}
