//! Connection settings, from libpq-style connection strings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::PgError;

/// Where and as whom to connect.
///
/// Parsed from either libpq form ([`FromStr`]):
/// - key/value: `host=db1 port=5432 user=repl password='a b' dbname=postgres`
/// - URL: `postgresql://repl:secret@db1:5432/postgres?application_name=tidemark`
///
/// Keys: `host` (a name, an address, or an absolute Unix socket directory), `hostaddr`, `port`,
/// `user`, `password`, `dbname`, `application_name`, `connect_timeout` (seconds), `sslmode`
/// (`disable`, `allow` or `prefer`: this client does not speak TLS yet, so `require` and
/// `verify-*` are refused rather than silently ignored), `replication` (ignored: replication
/// connections are always physical). Any other key is an error, as in libpq.
///
/// ```
/// use tidemark_source_pg::ConnectConfig;
/// let c: ConnectConfig = "host=127.0.0.1 port=5433 user=repl password='it''s'".parse().unwrap();
/// assert_eq!((c.host.as_str(), c.port, c.user.as_str()), ("127.0.0.1", 5433, "repl"));
/// assert_eq!(c.password.as_deref(), Some("it's"));
/// let u: ConnectConfig = "postgres://repl:p%40ss@db1/postgres".parse().unwrap();
/// assert_eq!((u.host.as_str(), u.port, u.password.as_deref()), ("db1", 5432, Some("p@ss")));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// Host name or address, or an absolute Unix socket directory. Default `localhost`.
    pub host: String,
    /// Port. Default 5432.
    pub port: u16,
    /// User name (needs the `REPLICATION` attribute). Default `postgres`.
    pub user: String,
    /// Password, for password, MD5 and SCRAM-SHA-256 authentication.
    pub password: Option<String>,
    /// Database (unused by physical replication connections, but shown in `pg_stat_activity`).
    pub dbname: Option<String>,
    /// `application_name`: what `synchronous_standby_names` matches. Default `tidemark`.
    pub application_name: String,
    /// How long to wait for the TCP connection. Default 30 s.
    pub connect_timeout: Duration,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            host: "localhost".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            dbname: None,
            application_name: "tidemark".to_owned(),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectConfig {
    fn set(&mut self, key: &str, value: String) -> Result<(), PgError> {
        match key {
            "host" | "hostaddr" => self.host = value,
            "port" => {
                self.port = value.parse().map_err(|_| PgError::config(format!("invalid port {value:?}")))?;
            }
            "user" => self.user = value,
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "application_name" => self.application_name = value,
            "connect_timeout" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| PgError::config(format!("invalid connect_timeout {value:?}: seconds expected")))?;
                self.connect_timeout = Duration::from_secs(secs.max(1));
            }
            "sslmode" => match value.as_str() {
                "disable" | "allow" | "prefer" => {}
                _ => {
                    return Err(PgError::config(format!(
                        "sslmode={value} is not supported yet: this client has no TLS; \
                         use sslmode=disable on a trusted network"
                    )));
                }
            },
            "replication" => {}
            _ => {
                return Err(PgError::config(format!(
                    "invalid connection option {key:?} (known: host, hostaddr, port, user, password, \
                     dbname, application_name, connect_timeout, sslmode)"
                )));
            }
        }
        Ok(())
    }

    fn parse_url(s: &str) -> Result<ConnectConfig, PgError> {
        let url = url::Url::parse(s).map_err(|e| PgError::config(format!("invalid connection URL: {e}")))?;
        let mut config = ConnectConfig::default();
        if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
            config.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        }
        if let Some(port) = url.port() {
            config.port = port;
        }
        if !url.username().is_empty() {
            config.user = percent_decode(url.username())?;
        }
        if let Some(password) = url.password() {
            config.password = Some(percent_decode(password)?);
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() {
            config.dbname = Some(percent_decode(db)?);
        }
        for (key, value) in url.query_pairs() {
            config.set(&key, value.into_owned())?;
        }
        Ok(config)
    }

    fn parse_key_values(s: &str) -> Result<ConnectConfig, PgError> {
        let mut config = ConnectConfig::default();
        let mut chars = s.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                return Ok(config);
            }
            let mut key = String::new();
            while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
                key.push(c);
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next() != Some('=') {
                return Err(PgError::config(format!("missing \"=\" after {key:?} in the connection string")));
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if_eq(&'\'').is_some() {
                loop {
                    match chars.next() {
                        None => {
                            return Err(PgError::config("unterminated quoted value in the connection string"));
                        }
                        Some('\\') => value.extend(chars.next()),
                        Some('\'') if chars.next_if_eq(&'\'').is_some() => value.push('\''),
                        Some('\'') => break,
                        Some(c) => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next());
                    } else {
                        value.push(c);
                    }
                }
            }
            config.set(&key, value)?;
        }
    }
}

impl FromStr for ConnectConfig {
    type Err = PgError;

    fn from_str(s: &str) -> Result<ConnectConfig, PgError> {
        let trimmed = s.trim();
        if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
            Self::parse_url(trimmed)
        } else {
            Self::parse_key_values(trimmed)
        }
    }
}

fn percent_decode(s: &str) -> Result<String, PgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::config(format!("invalid percent-encoding in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::config(format!("{s:?} is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        let c: ConnectConfig =
            "  host = /tmp/s port=1 user=u password='a \\'b\\' c' dbname=d application_name=x connect_timeout=5 sslmode=disable"
                .parse()
                .unwrap();
        assert_eq!(c.host, "/tmp/s");
        assert_eq!(c.port, 1);
        assert_eq!(c.password.as_deref(), Some("a 'b' c"));
        assert_eq!(c.dbname.as_deref(), Some("d"));
        assert_eq!(c.application_name, "x");
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("'b'"));
        assert_eq!("".parse::<ConnectConfig>().unwrap(), ConnectConfig::default());
        for bad in ["host", "port=x", "nope=1", "sslmode=require", "password='open"] {
            assert!(bad.parse::<ConnectConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        let c: ConnectConfig = "postgresql://u@[::1]:6000/db?application_name=a&sslmode=prefer".parse().unwrap();
        assert_eq!((c.host.as_str(), c.port, c.user.as_str()), ("::1", 6000, "u"));
        assert_eq!(c.dbname.as_deref(), Some("db"));
        assert_eq!(c.application_name, "a");
        assert!("postgresql://h/?sslmode=verify-full".parse::<ConnectConfig>().is_err());
        assert!("postgresql://h/?bogus=1".parse::<ConnectConfig>().is_err());
    }
}
