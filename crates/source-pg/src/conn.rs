//! The wire: a replication connection's socket, startup, authentication, message framing and
//! simple queries.
//!
//! Frontend messages come from `postgres-protocol`'s encoders. Backend messages are framed here
//! (tag byte, big-endian `u32` length that counts itself) and parsed by `postgres-protocol`,
//! except `CopyBothResponse` (`W`), which its parser does not know and which is handled here.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;

use crate::{ConnectConfig, PgError};

/// The largest backend message accepted. Base backup data arrives in messages of at most a few
/// hundred KiB and WAL in messages of at most 128 KiB; anything near this is a broken stream.
const MAX_MESSAGE_LEN: usize = 64 << 20;
const READ_CHUNK: usize = 256 << 10;

/// A backend message: one `postgres-protocol` parses, or `CopyBothResponse`.
pub(crate) enum Backend {
    Message(Message),
    CopyBoth,
}

/// One result set of a simple query: column names and rows of text (or raw) cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<Bytes>>>,
}

impl ResultSet {
    /// The text of row `row`, column `col`; an error naming `what` when missing, NULL or not
    /// UTF-8.
    pub fn text(&self, row: usize, col: usize, what: &str) -> Result<&str, PgError> {
        self.opt_text(row, col, what)?.ok_or_else(|| PgError::protocol(format!("{what} is NULL")))
    }

    /// Like [`text`](Self::text) but NULL is `None`.
    pub fn opt_text(&self, row: usize, col: usize, what: &str) -> Result<Option<&str>, PgError> {
        let cell = self
            .rows
            .get(row)
            .and_then(|r| r.get(col))
            .ok_or_else(|| PgError::protocol(format!("{what} missing from the server's answer")))?;
        cell.as_ref()
            .map(|b| std::str::from_utf8(b).map_err(|_| PgError::protocol(format!("{what} is not UTF-8"))))
            .transpose()
    }

    /// Row `row`, column `col` parsed with [`FromStr`](std::str::FromStr).
    pub fn parse<T: std::str::FromStr>(&self, row: usize, col: usize, what: &str) -> Result<T, PgError> {
        let text = self.text(row, col, what)?;
        text.parse().map_err(|_| PgError::protocol(format!("invalid {what} {text:?}")))
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The connection below the replication commands.
pub(crate) struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    scratch: Box<[u8]>,
    wbuf: BytesMut,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) notices: Vec<String>,
    /// Set when a command was abandoned midway: the stream position is unknown.
    pub(crate) broken: bool,
}

impl Conn {
    pub(crate) fn connect(config: &ConnectConfig) -> Result<Conn, PgError> {
        let stream = if config.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", config.host, config.port);
            Stream::Unix(UnixStream::connect(&path).map_err(|e| PgError::io(&format!("cannot connect to {path}"), e))?)
        } else {
            Stream::Tcp(connect_tcp(config)?)
        };
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            wbuf: BytesMut::new(),
            params: Vec::new(),
            notices: Vec::new(),
            broken: false,
        };
        conn.startup(config)?;
        Ok(conn)
    }

    fn startup(&mut self, config: &ConnectConfig) -> Result<(), PgError> {
        let mut params = vec![
            ("user", config.user.as_str()),
            ("replication", "true"),
            ("application_name", config.application_name.as_str()),
        ];
        if let Some(db) = &config.dbname {
            params.push(("database", db.as_str()));
        }
        frontend::startup_message(params, &mut self.wbuf)
            .map_err(|e| PgError::config(format!("invalid startup parameter: {e}")))?;
        self.flush()?;
        let mut scram: Option<sasl::ScramSha256> = None;
        let password = || {
            config.password.as_deref().ok_or_else(|| {
                PgError::new(
                    crate::ErrorKind::Auth,
                    format!(
                        "the server asks a password for user {:?}: add password=... to the connection string",
                        config.user
                    ),
                )
            })
        };
        loop {
            match self.recv()? {
                Backend::Message(Message::AuthenticationOk) => break,
                Backend::Message(Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password()?.as_bytes(), &mut self.wbuf)
                        .map_err(|e| PgError::config(format!("invalid password: {e}")))?;
                    self.flush()?;
                }
                Backend::Message(Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(config.user.as_bytes(), password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                        .map_err(|e| PgError::config(format!("invalid password: {e}")))?;
                    self.flush()?;
                }
                Backend::Message(Message::AuthenticationSasl(body)) => {
                    let mut mechanisms = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| PgError::protocol(format!("malformed SASL mechanism list: {e}")))?
                    {
                        found |= m == sasl::SCRAM_SHA_256;
                    }
                    if !found {
                        return Err(PgError::new(
                            crate::ErrorKind::Auth,
                            "the server offers no SASL mechanism this client speaks (SCRAM-SHA-256 without channel binding)",
                        ));
                    }
                    let state = sasl::ScramSha256::new(password()?.as_bytes(), sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, state.message(), &mut self.wbuf)
                        .map_err(|e| PgError::protocol(format!("SCRAM: {e}")))?;
                    scram = Some(state);
                    self.flush()?;
                }
                Backend::Message(Message::AuthenticationSaslContinue(body)) => {
                    let state = scram.as_mut().ok_or_else(|| PgError::protocol("SASL continue before SASL start"))?;
                    state
                        .update(body.data())
                        .map_err(|e| PgError::new(crate::ErrorKind::Auth, format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(state.message(), &mut self.wbuf)
                        .map_err(|e| PgError::protocol(format!("SCRAM: {e}")))?;
                    self.flush()?;
                }
                Backend::Message(Message::AuthenticationSaslFinal(body)) => {
                    let state = scram.as_mut().ok_or_else(|| PgError::protocol("SASL final before SASL start"))?;
                    state.finish(body.data()).map_err(|e| {
                        PgError::new(
                            crate::ErrorKind::Auth,
                            format!("the server's SCRAM signature does not verify: {e}"),
                        )
                    })?;
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields())
                        .with_context(&format!("connecting as {:?} to {}:{}", config.user, config.host, config.port)));
                }
                Backend::Message(Message::NoticeResponse(body)) => self.notice(body.fields()),
                Backend::Message(_) | Backend::CopyBoth => {
                    return Err(PgError::new(
                        crate::ErrorKind::Auth,
                        "the server asks for an authentication method this client does not \
                         support (supported: trust, password, md5, scram-sha-256)",
                    ));
                }
            }
        }
        loop {
            match self.recv()? {
                Backend::Message(Message::ReadyForQuery(_)) => return Ok(()),
                Backend::Message(Message::ParameterStatus(body)) => {
                    if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                        self.params.push((name.to_owned(), value.to_owned()));
                    }
                }
                Backend::Message(Message::BackendKeyData(_)) => {}
                Backend::Message(Message::NoticeResponse(body)) => self.notice(body.fields()),
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields()).with_context("starting the session"));
                }
                _ => return Err(PgError::protocol("unexpected message during startup")),
            }
        }
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn notice(&mut self, fields: ErrorFields<'_>) {
        let err = server_error(fields);
        self.notices.push(err.message().to_owned());
    }

    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), PgError> {
        self.stream.set_read_timeout(timeout).map_err(|e| PgError::io("cannot set the socket timeout", e))
    }

    /// Send what the encoders wrote into the write buffer.
    pub(crate) fn flush(&mut self) -> Result<(), PgError> {
        let result = self.stream.write_all(&self.wbuf).and_then(|()| self.stream.flush());
        self.wbuf.clear();
        result.map_err(|e| {
            self.broken = true;
            PgError::io("cannot send to the server", e)
        })
    }

    pub(crate) fn wbuf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// The next backend message; a read timeout is an error.
    pub(crate) fn recv(&mut self) -> Result<Backend, PgError> {
        loop {
            if let Some(message) = self.try_parse()? {
                return Ok(message);
            }
            if !self.fill()? {
                self.broken = true;
                return Err(PgError::io("waiting for the server", io::Error::from(io::ErrorKind::TimedOut)));
            }
        }
    }

    /// The next backend message, or `None` when the read timeout passes first. A partial
    /// message stays buffered for the next call.
    pub(crate) fn recv_or_idle(&mut self) -> Result<Option<Backend>, PgError> {
        loop {
            if let Some(message) = self.try_parse()? {
                return Ok(Some(message));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn try_parse(&mut self) -> Result<Option<Backend>, PgError> {
        let Some(header) = self.rbuf.get(..5) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(4..=MAX_MESSAGE_LEN).contains(&len) {
            self.broken = true;
            return Err(PgError::protocol(format!(
                "malformed message from the server: tag {:?}, length {len}",
                char::from(tag)
            )));
        }
        if self.rbuf.len() < len + 1 {
            self.rbuf.reserve(len + 1 - self.rbuf.len());
            return Ok(None);
        }
        if tag == b'W' {
            // CopyBothResponse: format (i8), column count (i16), formats; nothing to keep.
            let _frame = self.rbuf.split_to(len + 1);
            return Ok(Some(Backend::CopyBoth));
        }
        match Message::parse(&mut self.rbuf) {
            Ok(Some(message)) => Ok(Some(Backend::Message(message))),
            Ok(None) => Err(PgError::protocol("message framing out of step")),
            Err(e) => {
                self.broken = true;
                Err(PgError::protocol(format!("malformed message from the server (tag {:?}): {e}", char::from(tag))))
            }
        }
    }

    /// Read more bytes; `false` when the read timeout passed.
    fn fill(&mut self) -> Result<bool, PgError> {
        loop {
            match self.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.broken = true;
                    return Err(PgError::io(
                        "the server closed the connection",
                        io::Error::from(io::ErrorKind::UnexpectedEof),
                    ));
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&self.scratch[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ok(false);
                }
                Err(e) => {
                    self.broken = true;
                    return Err(PgError::io("cannot read from the server", e));
                }
            }
        }
    }

    fn check_usable(&self) -> Result<(), PgError> {
        if self.broken {
            return Err(PgError::protocol("the connection is unusable after an interrupted command: open a new one"));
        }
        Ok(())
    }

    /// Send a simple query (a replication command).
    pub(crate) fn send_query(&mut self, sql: &str) -> Result<(), PgError> {
        self.check_usable()?;
        frontend::query(sql, &mut self.wbuf).map_err(|e| PgError::config(format!("invalid command {sql:?}: {e}")))?;
        self.flush()
    }

    /// Run a command that answers with result sets only, up to `ReadyForQuery`.
    pub(crate) fn query(&mut self, sql: &str) -> Result<Vec<ResultSet>, PgError> {
        self.send_query(sql)?;
        let mut collector = ResultCollector::default();
        let mut error = None;
        loop {
            match self.recv()? {
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    error = Some(server_error(body.fields()));
                }
                Backend::Message(message) => {
                    if !collector.accept(self, message)? {
                        self.broken = true;
                        return Err(PgError::protocol(format!("unexpected message in the answer to {sql:?}")));
                    }
                }
                Backend::CopyBoth => {
                    self.broken = true;
                    return Err(PgError::protocol(format!("unexpected COPY BOTH in the answer to {sql:?}")));
                }
            }
        }
        match error {
            Some(err) => Err(err),
            None => Ok(collector.sets),
        }
    }

    /// Read and discard up to `ReadyForQuery` after an error, keeping the connection usable.
    pub(crate) fn drain_to_ready(&mut self) -> Result<(), PgError> {
        loop {
            if let Backend::Message(Message::ReadyForQuery(_)) = self.recv()? {
                return Ok(());
            }
        }
    }
}

/// Collects result sets from `RowDescription`, `DataRow` and `CommandComplete` messages.
#[derive(Default)]
pub(crate) struct ResultCollector {
    pub(crate) sets: Vec<ResultSet>,
}

impl ResultCollector {
    /// Take a result-set message; `false` for any other message (notices and parameter changes
    /// are taken care of too).
    pub(crate) fn accept(&mut self, conn: &mut Conn, message: Message) -> Result<bool, PgError> {
        match message {
            Message::RowDescription(body) => {
                let mut columns = Vec::new();
                let mut fields = body.fields();
                while let Some(field) =
                    fields.next().map_err(|e| PgError::protocol(format!("malformed row description: {e}")))?
                {
                    columns.push(field.name().to_owned());
                }
                self.sets.push(ResultSet { columns, rows: Vec::new() });
            }
            Message::DataRow(body) => {
                let set =
                    self.sets.last_mut().ok_or_else(|| PgError::protocol("data row without a row description"))?;
                let buffer = body.buffer_bytes().clone();
                let mut ranges = body.ranges();
                let mut row = Vec::with_capacity(set.columns.len());
                while let Some(range) =
                    ranges.next().map_err(|e| PgError::protocol(format!("malformed data row: {e}")))?
                {
                    row.push(match range {
                        Some(r) if r.end <= buffer.len() && r.start <= r.end => Some(buffer.slice(r)),
                        Some(_) => return Err(PgError::protocol("malformed data row: bad range")),
                        None => None,
                    });
                }
                if row.len() != set.columns.len() {
                    return Err(PgError::protocol(format!(
                        "data row has {} columns, its description {}",
                        row.len(),
                        set.columns.len()
                    )));
                }
                set.rows.push(row);
            }
            Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
            Message::NoticeResponse(body) => conn.notice(body.fields()),
            Message::ParameterStatus(body) => {
                if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                    conn.params.push((name.to_owned(), value.to_owned()));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A server error or notice as a [`PgError`]: message, detail, hint, SQLSTATE.
pub(crate) fn server_error(mut fields: ErrorFields<'_>) -> PgError {
    let (mut code, mut message, mut detail, mut hint, mut severity) = (None, String::new(), None, None, None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = Some(value),
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            b'V' => severity = Some(value),
            b'S' if severity.is_none() => severity = Some(value),
            _ => {}
        }
    }
    let mut text = format!("server {}: {message}", severity.as_deref().unwrap_or("ERROR"));
    if let Some(detail) = detail {
        text.push_str(&format!(" (detail: {detail})"));
    }
    if let Some(hint) = hint {
        text.push_str(&format!(" (hint: {hint})"));
    }
    PgError::server(code, text)
}

fn connect_tcp(config: &ConnectConfig) -> Result<TcpStream, PgError> {
    let target = format!("{}:{}", config.host, config.port);
    let addrs = (config.host.as_str(), config.port)
        .to_socket_addrs()
        .map_err(|e| PgError::io(&format!("cannot resolve {}", config.host), e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, config.connect_timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(PgError::io(
        &format!("cannot connect to {target}"),
        last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")),
    ))
}
