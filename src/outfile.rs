//! Outputs appear whole or not at all: everything is written to a hidden partial file beside
//! the destination (a `tempfile` named by destination and process) and persisted over it only
//! when the run succeeds; a failed run removes it,
//! and a later run removes those left by a process that was killed.
//! A live recording is the exception: it is written in place, as it goes (fragmented), so
//! that whatever ends the process leaves the recording up to then.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempPath;

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
    /// The hidden partial file (tempfile's, removed when dropped uncommitted); None: written
    /// at `dest` directly (a live recording), kept unless discarded or empty.
    partial: Option<TempPath>,
}

/// Remove `.NAME.partial-PID` files in `dir` whose process no longer runs (killed before it
/// could clean up).
fn remove_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The one line for a destination that cannot be written (the OS's reason, without the
/// partial file's name that tempfile adds to it).
fn unwritable(dest: &Path, e: std::io::Error) -> anyhow::Error {
    let reason = e
        .raw_os_error()
        .map_or(e, std::io::Error::from_raw_os_error);
    anyhow::anyhow!(
        "cannot write output {}: {reason}; choose a path in an existing, writable directory",
        dest.display()
    )
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
        remove_stale(dir, &name.to_string_lossy());
        // Named by destination and process (no random part), so that a later run can tell a
        // dead process's partial from a running one's; readable as the finished file will be.
        let prefix = format!(".{}.partial-{}", name.to_string_lossy(), std::process::id());
        let _ = std::fs::remove_file(dir.join(&prefix));
        let (file, partial) = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(0)
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| unwritable(dest, e))?
            .into_parts();
        if let Ok(mut list) = PARTIALS.lock() {
            list.push(partial.to_path_buf());
        }
        let out = OutFile {
            dest: dest.to_owned(),
            partial: Some(partial),
        };
        Ok((out, file))
    }

    /// A live recording at `dest`, written in place from the start (checked writable now).
    pub fn in_place(dest: &Path) -> Result<OutFile> {
        if dest.is_dir() {
            anyhow::bail!("output {} is a directory; give a file name", dest.display());
        }
        File::create(dest).map_err(|e| unwritable(dest, e))?;
        Ok(OutFile {
            dest: dest.to_owned(),
            partial: None,
        })
    }

    /// Remove what was written (a recording with no frame in it).
    pub fn discard(mut self) {
        match self.partial.take() {
            Some(p) => {
                forget(&p);
                drop(p);
            }
            None => {
                let _ = std::fs::remove_file(&self.dest);
            }
        }
    }

    /// Where writers put the bytes until [`commit`](Self::commit).
    pub fn partial_path(&self) -> &Path {
        self.partial.as_deref().unwrap_or(&self.dest)
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn commit(mut self) -> Result<()> {
        let Some(partial) = self.partial.take() else {
            self.dest.clear(); // in place: nothing to move, and nothing for Drop to check
            return Ok(());
        };
        let path = partial.to_path_buf();
        partial.persist(&self.dest).map_err(|e| {
            anyhow::Error::new(e.error).context(format!(
                "moving the finished output into place at {}",
                self.dest.display()
            ))
        })?;
        forget(&path);
        Ok(())
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        match self.partial.take() {
            // Dropping the TempPath removes the partial.
            Some(p) => forget(&p),
            // A live recording that never got a frame (the run failed before any) is no file.
            None if !self.dest.as_os_str().is_empty()
                && std::fs::metadata(&self.dest).is_ok_and(|m| m.len() == 0) =>
            {
                let _ = std::fs::remove_file(&self.dest);
            }
            None => {}
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

    /// Where the lines are being written (until the commit).
    pub fn path(&self) -> &Path {
        self.out.partial_path()
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
    fn partials_of_dead_processes_are_removed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        // A pid that cannot be running: above the kernel's pid_max (at most 2^22).
        let stale = dir.path().join(".o.mp4.partial-9999999");
        std::fs::write(&stale, "x")?;
        let alive = dir.path().join(format!(
            ".o.mp4.partial-{}",
            std::os::unix::process::parent_id()
        ));
        std::fs::write(&alive, "x")?;
        let (f, _) = OutFile::create(&dir.path().join("o.mp4"))?;
        assert!(!stale.exists());
        assert!(alive.exists(), "a running process keeps its partial");
        drop(f);
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
