//! [`DirectoryLock`]: at most one process uses a data directory at a time.
//!
//! Two replicas writing the same files would each take its own in-memory state for the durable
//! one; after a restart, writes one of them acknowledged are gone. So formatting and opening a
//! directory first take an exclusive advisory lock (`flock`) on the file [`LOCK_FILE`] in it,
//! before anything else is read or written, and hold it as long as the storage lives: the lock
//! belongs to the directory's [`crate::disk::RealDisk`], which the storage owns. The operating
//! system releases it when the last handle closes, however the process ends (a crash or SIGKILL
//! included), so a stale lock file never keeps a replica out. The holder writes its process id
//! into the file so that a refused process can name it; the file is never removed (removing it
//! would let a second process lock a new file of the same name while the first still holds the
//! old one).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::StorageError;
use crate::disk::read_up_to;

/// The name of the lock file in a data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Most bytes of the lock file read for the holder's process id (a `u32` in decimal and a
/// newline fit many times over).
const PID_BYTES_MAX: usize = 32;

/// The exclusive lock on a data directory; released when dropped.
#[derive(Debug)]
pub(crate) struct DirectoryLock {
    /// The open lock file: the lock lives as long as this handle.
    _file: File,
}

impl DirectoryLock {
    /// Takes the lock on `directory` (which must exist) without waiting, creating the lock file
    /// if needed, and writes this process's id into it.
    ///
    /// # Errors
    /// [`StorageError::Locked`] if another handle holds it (another process, or another storage
    /// of this process), [`StorageError::Io`] if the file cannot be created or locked.
    pub(crate) fn acquire(directory: &Path) -> Result<Self, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(directory.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    directory: directory.to_path_buf(),
                    holder_pid: read_pid(&file),
                });
            }
            Err(TryLockError::Error(error)) => return Err(StorageError::Io(error)),
        }
        let mut text = Vec::with_capacity(PID_BYTES_MAX);
        writeln!(text, "{}", std::process::id())?;
        file.set_len(0)?;
        file.write_all_at(&text, 0)?;
        Ok(Self { _file: file })
    }
}

/// The process id the holder wrote into the lock file, if it is there and readable.
fn read_pid(file: &File) -> Option<u32> {
    let mut buffer = [0u8; PID_BYTES_MAX];
    let read = read_up_to(file, 0, &mut buffer).ok()?;
    std::str::from_utf8(&buffer[..read])
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_handle_and_names_the_holder() {
        let directory = tempfile::tempdir().unwrap();
        let lock = DirectoryLock::acquire(directory.path()).unwrap();
        let error = DirectoryLock::acquire(directory.path()).unwrap_err();
        match &error {
            StorageError::Locked {
                directory: locked,
                holder_pid,
            } => {
                assert_eq!(locked, directory.path());
                assert_eq!(*holder_pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(lock);
        DirectoryLock::acquire(directory.path()).unwrap();
    }

    #[test]
    fn an_unreadable_pid_is_reported_as_unknown() {
        let directory = tempfile::tempdir().unwrap();
        let _lock = DirectoryLock::acquire(directory.path()).unwrap();
        std::fs::write(directory.path().join(LOCK_FILE), b"not a pid").unwrap();
        let error = DirectoryLock::acquire(directory.path()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Locked {
                    holder_pid: None,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("process unknown"), "{error}");
    }

    #[test]
    fn a_stale_pid_from_an_ended_holder_does_not_block() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(LOCK_FILE), b"4000000000\n").unwrap();
        drop(DirectoryLock::acquire(directory.path()).unwrap());
        let written = std::fs::read_to_string(directory.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));
    }
}
