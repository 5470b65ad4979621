//! The live page at `/` (`ws-realtime dev`, or `serve` with `WS_UI=true`):
//! one self-contained HTML file built from `clients/js/page` and committed
//! as `src/shell/ui/index.html`, embedded here so `cargo build` needs no
//! Node toolchain.
//!
//! The page connects with a token it finds in its config element. Only
//! `dev` fills one in (its secret is public and it listens on loopback by
//! default); under `serve` the element stays empty and the page asks for a
//! token, so a production page never carries a credential.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

/// The built page, as committed.
const PAGE: &str = include_str!("ui/index.html");

/// The empty config element the built page carries; `dev` replaces it.
const CONFIG_PLACEHOLDER: &str =
    r#"<script id="ws-realtime-config" type="application/json">{}</script>"#;

/// What the page may load: only itself and its own server (no CDN, no fonts).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page, rendered once at start-up.
#[derive(Debug, Clone)]
pub(crate) struct LivePage {
    /// The HTML body served for every `GET /`, the dev token filled in.
    html: Bytes,
}

impl LivePage {
    /// The page, with `dev_token` in its config element when given.
    pub(crate) fn new(dev_token: Option<&str>) -> LivePage {
        LivePage {
            html: Bytes::from(render(dev_token)),
        }
    }

    /// The `GET /` answer (the body type is `http`'s `Body`, spelled out so
    /// this file and the router do not import each other).
    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            // The dev token changes with every start: never cache it.
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::REFERRER_POLICY, "no-referrer")
            .body(Full::new(self.html.clone()))
            .expect("static headers are valid")
    }
}

/// The page's HTML with `dev_token` (if any) in its config element.
fn render(dev_token: Option<&str>) -> String {
    let Some(token) = dev_token else {
        return PAGE.to_owned();
    };
    // JSON inside <script>: escape `<` so no value can close the element.
    let config = serde_json::json!({ "token": token })
        .to_string()
        .replace('<', "\\u003c");
    PAGE.replacen(
        CONFIG_PLACEHOLDER,
        &format!(r#"<script id="ws-realtime-config" type="application/json">{config}</script>"#),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_page_is_self_contained_and_carries_the_config_placeholder() {
        assert!(PAGE.starts_with("<!doctype html>"));
        assert_eq!(PAGE.matches(CONFIG_PLACEHOLDER).count(), 1);
        // No CDN, no web fonts: everything is inline.
        for outside in [
            "<script src",
            "<link rel=\"stylesheet\"",
            "@import",
            "https://",
        ] {
            assert!(
                !PAGE.contains(outside),
                "the page refers outside itself: {outside}"
            );
        }
    }

    #[test]
    fn only_a_dev_page_carries_a_token() {
        assert_eq!(render(None), PAGE);
        let page = render(Some("aaa.bbb.ccc"));
        assert!(
            page.contains(r#"<script id="ws-realtime-config" type="application/json">{"token":"aaa.bbb.ccc"}</script>"#)
        );
        assert!(!page.contains(CONFIG_PLACEHOLDER));
    }

    #[test]
    fn a_token_cannot_close_the_script_element() {
        let page = render(Some("</script><script>alert(1)</script>"));
        assert!(!page.contains("</script><script>alert(1)"));
        assert!(page.contains(r#"\u003c/script>"#));
    }
}
