//! `START_REPLICATION ... PHYSICAL`: WAL as it is written.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::conn::{Backend, ResultCollector, server_error};
use crate::{Lsn, PgError, ReplicationClient};

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_SECS: u64 = 946_684_800;

/// One event of a WAL stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalMessage {
    /// WAL bytes starting at `start`.
    XLogData {
        /// The LSN of `data[0]`.
        start: Lsn,
        /// The server's current end of WAL.
        server_wal_end: Lsn,
        /// The WAL bytes (they may cross a segment boundary).
        data: Bytes,
    },
    /// A keepalive (answered already when the server asked for a reply).
    Keepalive {
        /// The server's current end of WAL.
        server_wal_end: Lsn,
    },
    /// The read timeout passed without a message (a status update was sent when one was due).
    Idle,
    /// The server finished the timeline it was streaming (after a promotion, streaming an older
    /// timeline): continue with `next_timeline` from `next_start`, after fetching its history.
    /// The stream is over; the client is usable again.
    TimelineEnd {
        /// The timeline that follows.
        next_timeline: u32,
        /// Where it forks off the streamed one.
        next_start: Lsn,
    },
}

/// A running `START_REPLICATION`, borrowing the client until [`finish`](Self::finish) or a
/// [`WalMessage::TimelineEnd`].
///
/// Report progress with [`confirm`](Self::confirm): the flush position is what the server keeps
/// in the slot and what a synchronous primary waits for, so confirm only WAL that is durable.
/// Status updates go out when the server asks, and every
/// [`status_interval`](Self::set_status_interval) (10 s by default) as long as
/// [`next_message`](Self::next_message) is being called; give the socket a read timeout
/// ([`ReplicationClient::set_read_timeout`]) so that it returns [`WalMessage::Idle`] while the
/// server is quiet.
#[derive(Debug)]
pub struct WalStream<'c> {
    client: &'c mut ReplicationClient,
    written: Lsn,
    flushed: Lsn,
    status_interval: Duration,
    last_status: Instant,
    ended: bool,
}

impl ReplicationClient {
    /// `START_REPLICATION [SLOT slot] PHYSICAL start TIMELINE timeline`.
    ///
    /// The server starts exactly at `start`; start at a segment boundary
    /// ([`Lsn::segment_start`]) to receive whole segments. With a slot, the server keeps the WAL
    /// from the slot's position until [`WalStream::confirm`]ed as flushed.
    pub fn start_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: u32,
    ) -> Result<WalStream<'_>, PgError> {
        let slot = match slot {
            Some(name) => {
                crate::client::check_slot_name(name)?;
                format!("SLOT {name} ")
            }
            None => String::new(),
        };
        let command = format!("START_REPLICATION {slot}PHYSICAL {start} TIMELINE {timeline}");
        self.conn.send_query(&command)?;
        loop {
            match self.conn.recv()? {
                Backend::CopyBoth => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    let err = server_error(body.fields());
                    self.conn.drain_to_ready()?;
                    return Err(err.with_context(&command));
                }
                Backend::Message(Message::NoticeResponse(body)) => self.conn.notice(body.fields()),
                Backend::Message(Message::ParameterStatus(_)) => {}
                Backend::Message(_) => {
                    self.conn.broken = true;
                    return Err(PgError::protocol(format!("unexpected answer to {command}")));
                }
            }
        }
        Ok(WalStream {
            client: self,
            written: start,
            flushed: start,
            status_interval: Duration::from_secs(10),
            last_status: Instant::now(),
            ended: false,
        })
    }
}

impl WalStream<'_> {
    /// How often to send a status update unasked (default 10 s; keep it well under the
    /// server's `wal_sender_timeout`).
    pub fn set_status_interval(&mut self, interval: Duration) {
        self.status_interval = interval;
    }

    /// Change how long [`next_message`](Self::next_message) waits before it returns
    /// [`WalMessage::Idle`] (the socket's read timeout).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), PgError> {
        self.client.set_read_timeout(timeout)
    }

    /// Record what is written and what is durable (flushed); the next status update reports it.
    /// Positions never go backwards.
    pub fn confirm(&mut self, written: Lsn, flushed: Lsn) {
        self.written = self.written.max(written);
        self.flushed = self.flushed.max(flushed);
    }

    /// Send a status update now (write, flush and apply positions as confirmed).
    pub fn send_status(&mut self, reply_requested: bool) -> Result<(), PgError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64 - (PG_EPOCH_OFFSET_SECS as i64) * 1_000_000)
            .unwrap_or(0);
        let mut payload = Vec::with_capacity(34);
        payload.push(b'r');
        payload.extend_from_slice(&self.written.0.to_be_bytes());
        payload.extend_from_slice(&self.flushed.0.to_be_bytes());
        payload.extend_from_slice(&self.flushed.0.to_be_bytes());
        payload.extend_from_slice(&now.to_be_bytes());
        payload.push(u8::from(reply_requested));
        let conn = &mut self.client.conn;
        frontend::CopyData::new(&payload[..])
            .map_err(|e| PgError::protocol(format!("status update: {e}")))?
            .write(conn.wbuf());
        conn.flush()?;
        self.last_status = Instant::now();
        Ok(())
    }

    /// The next message. After [`WalMessage::TimelineEnd`] the stream is over and further calls
    /// are an error.
    pub fn next_message(&mut self) -> Result<WalMessage, PgError> {
        if self.ended {
            return Err(PgError::protocol("the WAL stream has ended"));
        }
        loop {
            if self.last_status.elapsed() >= self.status_interval {
                self.send_status(false)?;
            }
            let Some(message) = self.client.conn.recv_or_idle()? else {
                return Ok(WalMessage::Idle);
            };
            match message {
                Backend::Message(Message::CopyData(body)) => {
                    let mut data = body.into_bytes();
                    match data.first() {
                        Some(b'w') if data.len() >= 25 => {
                            data.advance(1);
                            let start = Lsn(data.get_u64());
                            let server_wal_end = Lsn(data.get_u64());
                            let _send_time = data.get_i64();
                            return Ok(WalMessage::XLogData { start, server_wal_end, data });
                        }
                        Some(b'k') if data.len() >= 18 => {
                            data.advance(1);
                            let server_wal_end = Lsn(data.get_u64());
                            let _send_time = data.get_i64();
                            if data.get_u8() != 0 {
                                self.send_status(false)?;
                            }
                            return Ok(WalMessage::Keepalive { server_wal_end });
                        }
                        _ => {
                            self.client.conn.broken = true;
                            return Err(PgError::protocol(format!(
                                "malformed replication message (type {:?}, {} bytes)",
                                data.first().map(|b| char::from(*b)),
                                data.len()
                            )));
                        }
                    }
                }
                Backend::Message(Message::CopyDone) => return self.end_of_timeline(),
                // A walsender shutting down (fast or smart server shutdown) ends the stream with
                // CommandComplete once everything it sent is confirmed, then exits: a lost
                // connection, to be opened again once the server is back.
                Backend::Message(Message::CommandComplete(_)) => {
                    self.ended = true;
                    self.client.conn.broken = true;
                    return Err(PgError::io(
                        "streaming WAL",
                        std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the server ended the stream (shutting down)",
                        ),
                    ));
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    let err = server_error(body.fields());
                    self.ended = true;
                    self.client.conn.broken = true;
                    return Err(err.with_context("streaming WAL"));
                }
                Backend::Message(Message::NoticeResponse(body)) => {
                    self.client.conn.notice(body.fields());
                }
                Backend::Message(Message::ParameterStatus(_)) => {}
                _ => {
                    self.client.conn.broken = true;
                    return Err(PgError::protocol("unexpected message while streaming WAL"));
                }
            }
        }
    }

    /// The server sent CopyDone: answer it, read the next timeline and its start.
    fn end_of_timeline(&mut self) -> Result<WalMessage, PgError> {
        self.ended = true;
        let conn = &mut self.client.conn;
        frontend::copy_done(conn.wbuf());
        conn.flush()?;
        let mut collector = ResultCollector::default();
        let mut error = None;
        loop {
            match conn.recv()? {
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    error = Some(server_error(body.fields()));
                }
                // WAL in flight before the server saw our CopyDone.
                Backend::Message(Message::CopyData(_)) => {}
                Backend::Message(message) => {
                    if !collector.accept(conn, message)? {
                        conn.broken = true;
                        return Err(PgError::protocol("unexpected message after the WAL stream"));
                    }
                }
                Backend::CopyBoth => {
                    conn.broken = true;
                    return Err(PgError::protocol("unexpected COPY BOTH after the WAL stream"));
                }
            }
        }
        if let Some(err) = error {
            return Err(err.with_context("ending the WAL stream"));
        }
        match collector.sets.first() {
            Some(set) if !set.rows.is_empty() => Ok(WalMessage::TimelineEnd {
                next_timeline: set.parse(0, 0, "next timeline")?,
                next_start: set.parse(0, 1, "next timeline start")?,
            }),
            _ => Err(PgError::protocol("the server ended the WAL stream without naming the next timeline")),
        }
    }

    /// Stop streaming (CopyDone) and wait for the server to finish; the client is usable again.
    pub fn finish(mut self) -> Result<(), PgError> {
        if self.ended {
            return Ok(());
        }
        let _ = self.send_status(false);
        self.ended = true;
        let conn = &mut self.client.conn;
        frontend::copy_done(conn.wbuf());
        conn.flush()?;
        loop {
            match conn.recv()? {
                Backend::Message(Message::ReadyForQuery(_)) => return Ok(()),
                Backend::Message(Message::ErrorResponse(body)) => {
                    let err = server_error(body.fields());
                    conn.drain_to_ready()?;
                    return Err(err.with_context("ending the WAL stream"));
                }
                // WAL in flight, the server's CopyDone, a result set, CommandComplete.
                _ => {}
            }
        }
    }
}

impl Drop for WalStream<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.client.conn.broken = true;
        }
    }
}
