//! Tidemark HTTP storage: a repository server that can be append-only, and the
//! [`Storage`](tidemark_storage::Storage) client that talks to it.
//!
//! [`HttpServer`] serves any `Storage` (in practice a `LocalStorage` directory, through
//! `tidemark serve-repo`) over HTTP/1.1; [`HttpStorage`] is the client behind `-r http://host:port/`.
//! With [`ServerPolicy::append_only`], a stolen client credential can add backups but not destroy
//! them: the server refuses every delete and every replacement, except for lock objects under
//! `locks/` (which hold no backup data and must be refreshed and released). Pruning then runs with
//! the separate admin token or directly on the server's storage.
//!
//! # Protocol
//!
//! Keys are [`tidemark_storage::check_key`] keys, percent-encoded in the path (`/` kept).
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /KEY` | `200` and the object; `404` |
//! | `GET /KEY` with `Range: bytes=FIRST-LAST` | `206` and those bytes (inclusive); `416` beyond the end |
//! | `HEAD /KEY` | `200` with the size as `Content-Length`; `404` |
//! | `PUT /KEY` with `If-None-Match: *` | `201`; `412` if the key exists (create-only, what `put` sends) |
//! | `PUT /KEY` without it | `201`, replacing (`put_overwrite`); append-only: `403` if the key exists outside `locks/` |
//! | `DELETE /KEY` | `204`, also when missing; append-only: `403` outside `locks/` |
//! | `GET /?list=PREFIX` | `200` and a JSON array of `{"key": ..., "size": ...}`: the whole listing or an error |
//!
//! Every `PUT` carries `Content-Digest: sha-256=:BASE64:` (RFC 9530), checked by the server before it
//! stores anything (`400` on a mismatch). With a token configured, every request needs
//! `Authorization: Bearer TOKEN` (`401` otherwise). Invalid keys are `400`. Errors of the server's own
//! storage: `403` (its storage refused), `507` (full), `503` (transient), `500` (anything else; the
//! details go to the server's log with a request id). Every response has a `Content-Length`, so a
//! body cut off in transit is an error, never a short object or listing.
//!
//! ```
//! use std::net::TcpListener;
//! use std::sync::Arc;
//! use tidemark_storage::{ErrorKind, MemoryStorage, Storage};
//! use tidemark_storage_http::{HttpServer, HttpStorage, ServerPolicy, Shutdown};
//!
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let url = format!("http://{}/", listener.local_addr().unwrap());
//! let server = HttpServer::new(Arc::new(MemoryStorage::new()), ServerPolicy { append_only: true, ..Default::default() });
//! let shutdown = Shutdown::new();
//! std::thread::scope(|scope| {
//!     scope.spawn(|| server.serve(listener, &shutdown).unwrap());
//!     let client = HttpStorage::new(&url, None).unwrap();
//!     client.put("data/ab/ab12", b"pack").unwrap();
//!     assert_eq!(client.get_range("data/ab/ab12", 1..3).unwrap(), b"ac");
//!     assert_eq!(client.delete("data/ab/ab12").unwrap_err().kind(), ErrorKind::PermissionDenied);
//!     shutdown.trigger();
//! });
//! ```
#![deny(missing_docs)]

mod client;
mod protocol;
mod server;

pub use client::HttpStorage;
pub use protocol::{CONTENT_DIGEST, content_digest};
pub use server::{HttpServer, MAX_OBJECT_SIZE, ServerLog, ServerPolicy, Shutdown, serve};
