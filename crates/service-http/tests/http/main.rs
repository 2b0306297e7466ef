//! The HTTP layer end to end: real sockets, TLS, files and Chromium, over a fixture daemon.

mod util;

mod audit;
mod auth_matrix;
mod dashboard;
mod errors;
mod links;
mod metrics;
mod tls;
mod tokens;
