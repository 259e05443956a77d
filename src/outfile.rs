//! Outputs appear whole or not at all: everything is written to a hidden partial file beside
//! the destination and renamed over it only when the run succeeds; a failed run removes it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Partial files of this process, for [`remove_partials`] on an abrupt exit.
static PARTIALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove every partial file still open: for exits that skip destructors.
pub fn remove_partials() {
    if let Ok(list) = PARTIALS.lock() {
        for p in list.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn forget(partial: &Path) {
    if let Ok(mut list) = PARTIALS.lock() {
        list.retain(|p| p != partial);
    }
}

pub struct OutFile {
    dest: PathBuf,
    partial: PathBuf,
    committed: bool,
}

impl OutFile {
    /// Reserve `dest`: create its partial file now, so an unwritable path fails before any work.
    pub fn create(dest: &Path) -> Result<(OutFile, File)> {
        let name = dest
            .file_name()
            .with_context(|| format!("output {} has no file name", dest.display()))?;
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if dest.is_dir() {
            anyhow::bail!("output {} is a directory; give a file name", dest.display());
        }
        let partial = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&partial).map_err(|e| {
            anyhow::anyhow!(
                "cannot write output {}: {e}; choose a path in an existing, writable directory",
                dest.display()
            )
        })?;
        if let Ok(mut list) = PARTIALS.lock() {
            list.push(partial.clone());
        }
        Ok((
            OutFile {
                dest: dest.to_owned(),
                partial,
                committed: false,
            },
            file,
        ))
    }

    /// Where writers put the bytes until [`commit`](Self::commit).
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.partial, &self.dest).with_context(|| {
            format!(
                "moving the finished output into place at {}",
                self.dest.display()
            )
        })?;
        self.committed = true;
        forget(&self.partial);
        Ok(())
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
            forget(&self.partial);
        }
    }
}

/// A text file written line by line through an [`OutFile`].
pub struct LineFile {
    out: OutFile,
    w: BufWriter<File>,
}

impl LineFile {
    pub fn create(dest: &Path) -> Result<LineFile> {
        let (out, file) = OutFile::create(dest)?;
        Ok(LineFile {
            out,
            w: BufWriter::new(file),
        })
    }

    pub fn line(&mut self, s: &str) -> Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    pub fn commit(mut self) -> Result<()> {
        self.w
            .flush()
            .with_context(|| format!("writing {}", self.out.dest().display()))?;
        self.out.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_moves_and_drop_removes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("a.jsonl");
        let mut f = LineFile::create(&dest)?;
        f.line("{}")?;
        f.commit()?;
        assert_eq!(std::fs::read_to_string(&dest)?, "{}\n");

        let dest2 = dir.path().join("b.jsonl");
        let mut f = LineFile::create(&dest2)?;
        f.line("x")?;
        drop(f);
        assert!(!dest2.exists());
        assert_eq!(
            std::fs::read_dir(dir.path())?.count(),
            1,
            "partial left behind"
        );
        Ok(())
    }

    #[test]
    fn unwritable_path_is_reported() {
        let e = OutFile::create(Path::new("/no/such/dir/out.mp4"))
            .err()
            .expect("must fail");
        assert!(
            e.to_string()
                .contains("cannot write output /no/such/dir/out.mp4"),
            "{e}"
        );
    }
}
