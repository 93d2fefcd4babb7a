//! [`Disk`]: every file-system call the data directory makes, behind one small trait.
//!
//! The broker runs on [`RealDisk`], which forwards each call to `std::fs`. The trait exists so
//! that the `fault-injection` feature can put the same broker code on a simulated disk (module
//! `fault`) that forgets, at a simulated power loss, everything that was not synced, or runs
//! out of space: the storage code cannot tell the difference, so the tests exercise exactly the
//! code that runs in production. One virtual call per write or sync costs nothing next to the
//! system call behind it.
//!
//! The calls are the ones an append-only store needs: files are written at their end only
//! (a log is appended to, a snapshot written front to back), cut back with
//! [`DiskFile::truncate`], and made durable with an explicit sync of the file and, for
//! creations, renames and removals, of its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// The file-system calls of the data directory. See the module docs.
pub(crate) trait Disk: Send + Sync + 'static {
    /// Creates `dir` if it does not exist; returns true when it created it (the caller must
    /// then sync `dir`'s parent for the new directory to survive a power loss).
    fn create_dir(&self, dir: &Path) -> io::Result<bool>;
    /// Takes the exclusive lock of the file at `path` (created if missing) for as long as the
    /// returned guard lives; `None` when another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates the file at `path`, emptying it if it exists, for writing from its start.
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens the existing file at `path` for writing at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for writing at its end.
pub(crate) trait DiskFile: Write + Send {
    /// Makes the file's content durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file's content and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes; later writes go to its new end.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's length, which is where the next write goes.
    fn len(&self) -> u64;
}

/// Holds a lock taken by [`Disk::lock`] until dropped.
pub(crate) struct LockGuard(#[allow(dead_code, reason = "held for its drop")] Box<dyn Send + Sync>);

impl LockGuard {
    /// A guard that releases the lock when `held` is dropped.
    pub(crate) fn new(held: impl Send + Sync + 'static) -> Self {
        LockGuard(Box::new(held))
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// The operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct RealDisk;

impl Disk for RealDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<bool> {
        if dir.is_dir() {
            return Ok(false);
        }
        match fs::create_dir_all(dir) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockGuard::new(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(err),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(RealFile { file, len: 0 }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.seek(SeekFrom::End(0))?;
        Ok(Box::new(RealFile { file, len }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A file of [`RealDisk`]; `len` tracks the write position, which is always the end.
struct RealFile {
    file: File,
    len: u64,
}

impl Write for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DiskFile for RealFile {
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        self.len = len;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}
