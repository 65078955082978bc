//! The storage this crate drives: `vsr_storage`'s files and group-commit thread.

pub(crate) use vsr_storage::{FileStorage, Opened, StorageError, StorageEvent, StorageThread};
