//! [`DbSlot`]: the open redb database, which the writer closes and reopens after an I/O
//! failure.
//!
//! redb refuses every transaction after a write fails ("Previous I/O error occurred. Please
//! close and re-open the database"), so without a reopen a disk that filled up once would
//! leave the store refusing writes until the process restarts, even after space is freed.
//! Readers take a clone of the current handle for the length of one read; the writer waits
//! for those to finish before it closes the file, because redb allows one open handle per
//! file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::Database;

use super::StoreError;

/// How long a reopen waits for readers still holding the old handle.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// The store file's current database handle.
pub(crate) struct DbSlot {
    path: PathBuf,
    /// redb's page cache cap, for reopening as it was opened.
    cache_bytes: usize,
    /// Every write transaction saves redb's allocator state (`--store-quick-repair`).
    quick_repair: bool,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbSlot {
    pub(crate) fn new(
        path: PathBuf,
        db: Database,
        cache_bytes: usize,
        quick_repair: bool,
    ) -> DbSlot {
        DbSlot {
            path,
            cache_bytes,
            quick_repair,
            db: RwLock::new(Some(Arc::new(db))),
        }
    }

    /// Whether write transactions save redb's allocator state, so that opening the file
    /// after a crash needs no full repair.
    pub(crate) fn quick_repair(&self) -> bool {
        self.quick_repair
    }

    /// The open database, for one transaction.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] while a reopen has not succeeded yet.
    pub(crate) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| StoreError::Unavailable {
                reason: "the store file is being reopened after a write failure".into(),
            })
    }

    /// Closes the database and opens it again (redb repairs it if the failed write left it
    /// unclean). Called by the writer only, between transactions.
    ///
    /// # Errors
    /// The file cannot be opened again (the disk is still failing), or readers held the old
    /// handle past a grace period; the slot then stays empty or keeps the old handle, and a
    /// later call tries again.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let taken = self.db.write().take();
        if let Some(mut old) = taken {
            let deadline = Instant::now() + READERS_GRACE;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still_shared) => {
                        *self.db.write() = Some(still_shared);
                        return Err(StoreError::Unavailable {
                            reason: "readers held the store file past the reopen's grace period"
                                .into(),
                        });
                    }
                }
            }
        }
        let db = super::open_database(&self.path, self.cache_bytes).map_err(|e| {
            StoreError::Unavailable {
                reason: format!("reopening {}: {e}", self.path.display()),
            }
        })?;
        *self.db.write() = Some(Arc::new(db));
        Ok(())
    }
}
