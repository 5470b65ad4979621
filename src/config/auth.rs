//! The asymmetric side of `WS_AUTH_*`: a PEM public key file and a JWKS (URL
//! or file). Files are read and parsed at start-up, so a bad one stops the
//! server with the variable's name; a URL is only checked for form, since an
//! identity provider that is down must not stop the server.

use std::path::Path;
use std::time::Duration;

use crate::auth::{JwksConfig, JwksLocation};
use crate::config::settings::{nonzero_duration, resolve_credential};
use crate::config::{ConfigError, Settings};

/// The asymmetric keys of [`AuthSettings`], read and checked.
pub(super) struct AsymmetricKeys {
    /// `WS_AUTH_PUBLIC_KEY_FILE`'s content, checked.
    pub(super) public_key_pem: Option<Vec<u8>>,
    /// The JWKS source and its refresh settings.
    pub(super) jwks: Option<JwksConfig>,
}

/// Largest JWKS document read, from a URL or a file: an IdP's is a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// `WS_AUTH_PUBLIC_KEY_FILE` and `WS_AUTH_JWKS_URL` / `WS_AUTH_JWKS_FILE`:
/// files are read and parsed now, so a bad one stops the start with its
/// variable's name; a URL is only checked for form (an IdP that is down
/// must not stop the server).
pub(super) fn asymmetric_keys(
    settings: &Settings,
    credentials_dir: Option<&Path>,
) -> Result<AsymmetricKeys, ConfigError> {
    let public_key_pem = match settings.get("WS_AUTH_PUBLIC_KEY_FILE") {
        None => None,
        Some(file) => {
            let path = resolve_credential(Path::new(file.trim()), credentials_dir);
            let pem = std::fs::read(&path).map_err(|e| {
                ConfigError::invalid(
                    "WS_AUTH_PUBLIC_KEY_FILE",
                    file,
                    &format!("a readable PEM public key file ({}: {e})", path.display()),
                )
            })?;
            crate::auth::parse_public_key_pem(&pem).map_err(|e| {
                ConfigError::invalid("WS_AUTH_PUBLIC_KEY_FILE", file, &e.to_string())
            })?;
            Some(pem)
        }
    };
    let location = match (
        settings.get("WS_AUTH_JWKS_URL"),
        settings.get("WS_AUTH_JWKS_FILE"),
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "WS_AUTH_JWKS_FILE",
                settings.get("WS_AUTH_JWKS_FILE").unwrap_or_default(),
                "unset while WS_AUTH_JWKS_URL is set: use one JWKS source",
            ));
        }
        (Some(url), None) => {
            let url = url.trim();
            crate::auth::jwks::check_url(url)
                .map_err(|why| ConfigError::invalid("WS_AUTH_JWKS_URL", url, &why))?;
            Some(JwksLocation::Url(url.to_owned()))
        }
        (None, Some(file)) => {
            let path = resolve_credential(Path::new(file.trim()), credentials_dir);
            let body = std::fs::read(&path).map_err(|e| {
                ConfigError::invalid(
                    "WS_AUTH_JWKS_FILE",
                    file,
                    &format!("a readable JWKS file ({}: {e})", path.display()),
                )
            })?;
            crate::auth::parse_jwks(&body).map_err(|e| {
                ConfigError::invalid("WS_AUTH_JWKS_FILE", file, &format!("a JWKS document: {e}"))
            })?;
            Some(JwksLocation::File(path))
        }
        (None, None) => None,
    };
    let jwks = match location {
        None => None,
        Some(location) => {
            // A file is only stat'ed between reads, so it is checked often.
            let default_refresh = match location {
                JwksLocation::Url(_) => Duration::from_secs(300),
                JwksLocation::File(_) => Duration::from_secs(2),
            };
            Some(JwksConfig {
                location,
                refresh_interval: nonzero_duration(
                    settings,
                    "WS_AUTH_JWKS_REFRESH_INTERVAL",
                    default_refresh,
                )?,
                min_refetch_interval: settings
                    .duration_or("WS_AUTH_JWKS_MIN_REFETCH_INTERVAL", Duration::from_secs(30))?,
                timeout: nonzero_duration(
                    settings,
                    "WS_AUTH_JWKS_TIMEOUT",
                    Duration::from_secs(5),
                )?,
                max_body_bytes: MAX_JWKS_BYTES,
            })
        }
    };
    Ok(AsymmetricKeys {
        public_key_pem,
        jwks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> Result<AsymmetricKeys, ConfigError> {
        asymmetric_keys(&Settings::from_pairs(pairs.iter().copied()), None)
    }

    fn names(err: ConfigError, variable: &str) {
        assert!(err.to_string().contains(variable), "{err}");
    }

    #[test]
    fn a_jwks_url_must_be_https_or_loopback_http() {
        let https = keys(&[("WS_AUTH_JWKS_URL", "https://idp.example.com/certs")]).unwrap();
        let jwks = https.jwks.expect("configured");
        assert_eq!(jwks.refresh_interval, Duration::from_secs(300));
        assert_eq!(jwks.min_refetch_interval, Duration::from_secs(30));
        assert_eq!(jwks.timeout, Duration::from_secs(5));
        assert!(keys(&[("WS_AUTH_JWKS_URL", "http://127.0.0.1:9/jwks")]).is_ok());
        assert!(keys(&[("WS_AUTH_JWKS_URL", "http://[::1]:9/jwks")]).is_ok());
        for bad in [
            "http://idp.example.com/certs",
            "ftp://x/y",
            "not a url",
            "https://",
        ] {
            let err = keys(&[("WS_AUTH_JWKS_URL", bad)])
                .err()
                .unwrap_or_else(|| panic!("{bad}"));
            names(err, "WS_AUTH_JWKS_URL");
        }
    }

    #[test]
    fn bad_key_files_stop_the_start_naming_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "{\"keys\":[]}").unwrap();
        let garbage = garbage.to_str().unwrap();
        names(
            keys(&[("WS_AUTH_JWKS_FILE", garbage)]).err().unwrap(),
            "WS_AUTH_JWKS_FILE",
        );
        names(
            keys(&[("WS_AUTH_JWKS_FILE", "/nonexistent/jwks.json")])
                .err()
                .unwrap(),
            "WS_AUTH_JWKS_FILE",
        );
        names(
            keys(&[("WS_AUTH_PUBLIC_KEY_FILE", garbage)]).err().unwrap(),
            "WS_AUTH_PUBLIC_KEY_FILE",
        );
        names(
            keys(&[
                ("WS_AUTH_JWKS_URL", "https://idp.example.com/certs"),
                ("WS_AUTH_JWKS_FILE", garbage),
            ])
            .err()
            .unwrap(),
            "WS_AUTH_JWKS_FILE",
        );
        names(
            keys(&[
                ("WS_AUTH_JWKS_URL", "https://idp.example.com/certs"),
                ("WS_AUTH_JWKS_TIMEOUT", "soon"),
            ])
            .err()
            .unwrap(),
            "WS_AUTH_JWKS_TIMEOUT",
        );
    }

    #[test]
    fn with_asymmetric_keys_the_secret_is_optional_and_previous_ones_are_a_list() {
        use crate::config::ServerConfig;
        let only_jwks = Settings::from_pairs([("WS_AUTH_JWKS_URL", "https://idp.example.com/c")]);
        let config = ServerConfig::from_settings(&only_jwks).expect("no secret needed");
        assert!(config.auth.secret.is_empty());
        let neither = Settings::from_pairs([("WS_SOURCES", "kafka")]);
        names(
            ServerConfig::from_settings(&neither).unwrap_err(),
            "WS_AUTH_SECRET",
        );
        let rotated = Settings::from_pairs([
            ("WS_AUTH_SECRET", "new-secret"),
            ("WS_AUTH_SECRET_PREVIOUS", "old-one, older-one"),
            ("WS_AUTH_REFRESH_LEAD", "2m"),
        ]);
        let config = ServerConfig::from_settings(&rotated).unwrap();
        assert_eq!(
            config.auth.previous_secrets,
            [b"old-one".to_vec(), b"older-one".to_vec()]
        );
        assert_eq!(config.core.refresh_lead, Duration::from_secs(120));
    }

    #[test]
    fn a_jwks_file_is_checked_often_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"}]}"#;
        std::fs::write(&path, jwks).unwrap();
        let keys = keys(&[("WS_AUTH_JWKS_FILE", path.to_str().unwrap())]).unwrap();
        let jwks = keys.jwks.expect("configured");
        assert_eq!(jwks.location, JwksLocation::File(path));
        assert_eq!(jwks.refresh_interval, Duration::from_secs(2));
    }
}
