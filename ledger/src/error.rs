//! The log's errors. Rejections of a request (a version conflict, a reused command id, a limit)
//! write nothing; operational failures carry the path, stream or position they concern.

use std::path::PathBuf;

use crate::ExpectedVersion;

/// Everything the event log can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream's version is not the one the caller expected. Nothing was written.
    #[error("version conflict on stream {stream}: expected {expected}, actual version {actual}")]
    VersionConflict {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was decided (0: the stream has no events).
        actual: u64,
    },

    /// The command id was used before with other content. Nothing was written.
    #[error(
        "command id {command_id:?} was already used for a different append; use a new id or resend the original content"
    )]
    IdempotencyKeyReused {
        /// The reused id.
        command_id: String,
    },

    /// A request broke one of the limits in `limits`. Nothing was written.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which rule or limit, e.g. `stream id` or `event size`.
        what: &'static str,
        /// What was wrong and what would be right.
        detail: String,
    },

    /// Another process holds the data directory.
    #[error("store {path} is in use by {holder}; stop it or talk to it with --nats")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// `pid N` when the holder wrote its pid, else `another process`.
        holder: String,
    },

    /// The data directory was written by a format this build does not know.
    #[error("store {path} has on-disk format {found}; this build reads format {supported} only")]
    UnsupportedFormat {
        /// The data directory.
        path: PathBuf,
        /// The format found.
        found: String,
        /// The format this build reads and writes.
        supported: u32,
    },

    /// A stored record could not be decoded or contradicts its key.
    #[error("corrupt record at position {position}: {detail}")]
    Corrupt {
        /// The global position (or 0 where none applies).
        position: u64,
        /// What is wrong.
        detail: String,
    },

    /// fjall failed. The writer stops after a failed write or fsync; reopen the store.
    #[error("storage failure while {context}: {source}")]
    Storage {
        /// What the log was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: fjall::Error,
    },

    /// A file-system call failed.
    #[error("I/O failure on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The writer stopped after a failed write or fsync, or the log was closed. Nothing of this
    /// append was acknowledged; reopen the store to continue.
    #[error("the log's writer has stopped ({cause}); nothing was appended")]
    WriterStopped {
        /// Why the writer stopped.
        cause: String,
    },

    /// This handle runs no writer: it mirrors a replicated log, or its writer was stopped.
    #[error("this instance mirrors the replicated log and is not its writer: {detail}")]
    NotWriter {
        /// What was asked of it.
        detail: String,
    },

    /// The stream index stopped following the log (its write failed). The log is unharmed;
    /// reopening the store indexes it again from its checkpoint.
    #[error("the stream index has stopped ({cause}); reopen the store to index the log again")]
    IndexStopped {
        /// Why the index stopped.
        cause: String,
    },
}

impl Error {
    pub(crate) fn storage(context: impl Into<String>) -> impl FnOnce(fjall::Error) -> Error {
        let context = context.into();
        move |source| Error::Storage { context, source }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// The log's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
