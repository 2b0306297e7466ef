//! The dashboard at `/`: one self-contained page (HTML, CSS and vanilla JavaScript compiled
//! into the binary) that asks for a token and reads the API with it.
//!
//! The page is served with a Content-Security-Policy that allows exactly its own inline style
//! and script (by their SHA-256) and requests to this server, nothing else: an injected script
//! could otherwise read the token from local storage.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

const HTML: &str = include_str!("dashboard/index.html");
const CSS: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// The assembled page and its Content-Security-Policy.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = HTML.replacen("/*STYLE*/", CSS, 1).replacen("/*SCRIPT*/", SCRIPT, 1);
    let hash = |text: &str| STANDARD.encode(Sha256::digest(text.as_bytes()));
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(SCRIPT),
        hash(CSS)
    );
    (page, policy)
});

pub(crate) async fn page() -> Response {
    let (page, policy) = &*PAGE;
    let mut response = page.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(value) = HeaderValue::from_str(policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_its_style_and_script_once() {
        let (page, policy) = &*PAGE;
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*SCRIPT*/"));
        assert!(page.contains(&format!("<style>{CSS}</style>")));
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
    }
}
