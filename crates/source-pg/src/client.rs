//! The replication client and its non-streaming commands.

use std::time::Duration;

use crate::conn::{Conn, ResultSet};
use crate::{ConnectConfig, ErrorKind, Lsn, PgError};

/// What `IDENTIFY_SYSTEM` says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier (set by initdb; the same on every standby of it).
    pub system_identifier: u64,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlog_position: Lsn,
}

/// A timeline history file (`TIMELINE_HISTORY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// Its file name, such as `00000002.history`.
    pub file_name: String,
    /// Its contents, byte for byte.
    pub content: Vec<u8>,
}

/// A physical replication slot as `READ_REPLICATION_SLOT` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    /// The oldest WAL position the slot keeps (`None` before it reserved WAL).
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`.
    pub restart_timeline: Option<u32>,
}

/// The outcome of [`ReplicationClient::create_physical_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCreated {
    /// `false` when the slot existed already (which is fine).
    pub created: bool,
    /// Where the slot's reserved WAL starts (`None` for an existing slot that never reserved
    /// WAL).
    pub restart_lsn: Option<Lsn>,
}

/// A replication-protocol connection (`replication=true`) to a PostgreSQL server: the commands a
/// physical standby and `pg_basebackup` use, synchronous, over TCP or a Unix socket.
///
/// One command at a time; a command abandoned midway (a sink error during
/// [`base_backup`](Self::base_backup), a dropped [`WalStream`](crate::WalStream) without
/// [`finish`](crate::WalStream::finish)) leaves the connection unusable: open a new one.
pub struct ReplicationClient {
    pub(crate) conn: Conn,
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient").field("server_version", &self.server_version()).finish_non_exhaustive()
    }
}

impl ReplicationClient {
    /// Connect and authenticate (trust, password, MD5 or SCRAM-SHA-256).
    pub fn connect(config: &ConnectConfig) -> Result<ReplicationClient, PgError> {
        Ok(ReplicationClient { conn: Conn::connect(config)? })
    }

    /// [`connect`](Self::connect) with a libpq connection string.
    pub fn connect_str(connstr: &str) -> Result<ReplicationClient, PgError> {
        Self::connect(&connstr.parse()?)
    }

    /// The `server_version` the server reported, such as `15.14 (Debian 15.14-0+deb12u1)`.
    pub fn server_version(&self) -> Option<&str> {
        self.conn.param("server_version")
    }

    /// The server's version as `server_version_num` would give it (`150014`), parsed from
    /// `server_version`.
    pub fn server_version_num(&self) -> Option<u32> {
        let version = self.server_version()?;
        let numeric: String = version.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let mut parts = numeric.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        Some(major * 10_000 + minor)
    }

    /// A server parameter reported at startup or since (`server_version`, `integer_datetimes`,
    /// ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.conn.param(name)
    }

    /// Notices the server sent since the last call (warnings for the caller to show).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.conn.notices)
    }

    /// Set a read timeout on the socket (`None`: wait forever, the default). Commands fail with
    /// a transient [`ErrorKind::Io`] error when the server is silent longer.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), PgError> {
        self.conn.set_read_timeout(timeout)
    }

    /// Run a replication command that answers with result sets (`SHOW wal_segment_size`,
    /// `IDENTIFY_SYSTEM`, ...).
    pub fn simple_query(&mut self, command: &str) -> Result<Vec<ResultSet>, PgError> {
        self.conn.query(command)
    }

    fn one_set(&mut self, command: &str) -> Result<ResultSet, PgError> {
        self.conn
            .query(command)?
            .into_iter()
            .next()
            .ok_or_else(|| PgError::protocol(format!("no result set for {command}")))
    }

    /// `IDENTIFY_SYSTEM`.
    pub fn identify_system(&mut self) -> Result<SystemIdentity, PgError> {
        let set = self.one_set("IDENTIFY_SYSTEM")?;
        Ok(SystemIdentity {
            system_identifier: set.parse(0, 0, "system identifier")?,
            timeline: set.parse(0, 1, "timeline")?,
            xlog_position: set.parse(0, 2, "WAL position")?,
        })
    }

    /// `SHOW wal_segment_size` in bytes (PostgreSQL reports it as `16MB`).
    pub fn wal_segment_size(&mut self) -> Result<u64, PgError> {
        let set = self.one_set("SHOW wal_segment_size")?;
        parse_size(set.text(0, 0, "wal_segment_size")?)
    }

    /// `TIMELINE_HISTORY tli`: the history file of a timeline after the first.
    pub fn timeline_history(&mut self, timeline: u32) -> Result<TimelineHistory, PgError> {
        let set = self.one_set(&format!("TIMELINE_HISTORY {timeline}"))?;
        let file_name = set.text(0, 0, "history file name")?.to_owned();
        // Sent raw, although the column is declared bytea.
        let content = set
            .rows
            .first()
            .and_then(|r| r.get(1))
            .and_then(|c| c.as_ref())
            .ok_or_else(|| PgError::protocol("history file content missing"))?
            .to_vec();
        if file_name != crate::wal::history_file_name(timeline) {
            return Err(PgError::protocol(format!("asked for timeline {timeline}'s history, got {file_name:?}")));
        }
        Ok(TimelineHistory { file_name, content })
    }

    /// `CREATE_REPLICATION_SLOT name PHYSICAL RESERVE_WAL`; an existing slot of that name is
    /// fine (`created: false`).
    pub fn create_physical_slot(&mut self, name: &str) -> Result<SlotCreated, PgError> {
        check_slot_name(name)?;
        // For physical slots the answer's consistent_point is 0/0: read the slot back instead.
        let created = match self.conn.query(&format!("CREATE_REPLICATION_SLOT {name} PHYSICAL RESERVE_WAL")) {
            Ok(_) => true,
            Err(err) if err.sqlstate() == Some("42710") => false,
            Err(err) => {
                return Err(err.with_context(&format!("creating replication slot {name:?}")));
            }
        };
        let info = self
            .read_replication_slot(name)?
            .ok_or_else(|| PgError::protocol(format!("replication slot {name:?} vanished right after its creation")))?;
        Ok(SlotCreated { created, restart_lsn: info.restart_lsn })
    }

    /// `READ_REPLICATION_SLOT name` (PostgreSQL 15+): `None` when there is no such slot.
    pub fn read_replication_slot(&mut self, name: &str) -> Result<Option<SlotInfo>, PgError> {
        check_slot_name(name)?;
        let set = self.one_set(&format!("READ_REPLICATION_SLOT {name}"))?;
        match set.opt_text(0, 0, "slot type")? {
            None => Ok(None),
            Some("physical") => Ok(Some(SlotInfo {
                restart_lsn: set.opt_text(0, 1, "restart LSN")?.map(str::parse).transpose()?,
                restart_timeline: set
                    .opt_text(0, 2, "restart timeline")?
                    .map(|t| t.parse().map_err(|_| PgError::protocol(format!("invalid timeline {t:?}"))))
                    .transpose()?,
            })),
            Some(other) => Err(PgError::new(
                ErrorKind::Config,
                format!("replication slot {name:?} is a {other} slot, not a physical one"),
            )),
        }
    }

    /// `DROP_REPLICATION_SLOT name WAIT`.
    pub fn drop_replication_slot(&mut self, name: &str) -> Result<(), PgError> {
        check_slot_name(name)?;
        self.conn.query(&format!("DROP_REPLICATION_SLOT {name} WAIT")).map(drop)
    }
}

/// Slot names are `[a-z0-9_]{1,63}` (PostgreSQL's rule); checking them also keeps them out of
/// the command grammar.
pub(crate) fn check_slot_name(name: &str) -> Result<(), PgError> {
    if name.is_empty()
        || name.len() > 63
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(PgError::config(format!("invalid replication slot name {name:?}: use 1 to 63 of a-z, 0-9 and _")));
    }
    Ok(())
}

/// `16MB`, `1GB`, `8kB`, or plain bytes, as `SHOW` prints sizes.
fn parse_size(text: &str) -> Result<u64, PgError> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let unit = &text[digits.len()..];
    let n: u64 = digits.parse().map_err(|_| PgError::protocol(format!("invalid size {text:?}")))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return Err(PgError::protocol(format!("invalid size {text:?}"))),
    };
    Ok(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_slot_names() {
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("MB").is_err());
        assert!(parse_size("3XB").is_err());
        check_slot_name("tidemark_1").unwrap();
        for bad in ["", "Upper", "a-b", "a b; DROP", &"x".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
    }
}
