//! TLS on the listening port (`WS_TLS_CERT_FILE`, `WS_TLS_KEY_FILE`): one
//! rustls configuration whose certificate can be swapped while the server
//! runs, the per-connection handshake, and the watcher that reloads the
//! certificate on SIGHUP and when its files change.
//!
//! The handshake runs in the connection's own task (never in the accept loop
//! or the driver), bounded by `WS_HANDSHAKE_TIMEOUT`. After it, the stream is
//! served by the same HTTP code as plain TCP; an upgraded WebSocket goes
//! through the shell's buffered socket adapter. Connections that are already
//! open keep the certificate they were handshaken with: a reload affects only
//! new handshakes, so nobody is dropped. Telling TLS from plain HTTP by the
//! first byte, and closing what is not served, is in `rewind`.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::shell::rewind::{Rewind, refuse};
use crate::shutdown::Shutdown;

/// The variable naming the certificate chain file.
pub const CERT_VARIABLE: &str = "WS_TLS_CERT_FILE";

/// The variable naming the private key file.
pub const KEY_VARIABLE: &str = "WS_TLS_KEY_FILE";

/// The first byte of every TLS record carrying a handshake (ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The JSON body answering a plain-HTTP request on the TLS port.
const PLAIN_HTTP_BODY: &str =
    r#"{"error":"tls_required","message":"this port serves TLS only: use https:// or wss://"}"#;

/// A certificate or key file that cannot be used, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={path:?} cannot be used: {reason}")]
pub struct TlsError {
    /// `WS_TLS_CERT_FILE` or `WS_TLS_KEY_FILE`.
    pub variable: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The certificate new handshakes get; swapped by a reload.
#[derive(Debug)]
struct CertStore {
    /// The chain and key in use. Handshakes clone the `Arc`, so a swap never
    /// waits for them and never changes a handshake already under way.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The raw bytes of the two files, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    /// The certificate file.
    cert: Vec<u8>,
    /// The key file.
    key: Vec<u8>,
}

/// TLS for the listening port: the acceptor and its reloadable certificate.
pub struct Tls {
    /// Handshakes; its configuration resolves the certificate through `store`.
    acceptor: TlsAcceptor,
    /// Where a reload puts the new certificate.
    store: Arc<CertStore>,
    /// Parses keys on reload (ring, as for the rest of the crate).
    provider: Arc<CryptoProvider>,
    /// Where the certificate and key are read from.
    files: TlsFiles,
    /// The file contents last tried (loaded or refused), so the watcher
    /// retries only after they change again and does not log a bad file
    /// every few seconds.
    tried: Mutex<Contents>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the certificate and key: a start-up error names the
    /// variable whose file is unreadable, not PEM, or does not match.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let contents = read(files)?;
        let key = certified_key(&contents, files, &provider)?;
        let store = Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        // Only HTTP/1.1 is spoken (the WebSocket upgrade needs it); a client
        // offering h2 and http/1.1 gets http/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            provider,
            files: files.clone(),
            tried: Mutex::new(contents),
        })
    }

    /// Reads the files again and, when they hold a usable certificate and
    /// key, makes new handshakes use them. On an error the certificate in
    /// use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let contents = read(&self.files)?;
        self.install(contents)
    }

    /// [`Tls::reload`] if the files changed since they were last tried;
    /// `None` when they did not.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let contents = match read(&self.files) {
            Ok(contents) => contents,
            // Mid-rotation a file may be missing for a moment; the next
            // check sees the finished rotation.
            Err(_) => return None,
        };
        if *self.tried.lock().unwrap_or_else(PoisonError::into_inner) == contents {
            return None;
        }
        Some(self.install(contents))
    }

    /// Checks `contents` and installs them; remembers them either way.
    fn install(&self, contents: Contents) -> Result<(), TlsError> {
        let checked = certified_key(&contents, &self.files, &self.provider);
        *self.tried.lock().unwrap_or_else(PoisonError::into_inner) = contents;
        let key = checked?;
        *self
            .store
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// Reloads (off the runtime's threads: RSA key parsing takes a while)
    /// and logs how it went.
    async fn reload_logged(self: &Arc<Self>, why: &'static str, forced: bool) {
        let tls = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if forced {
                Some(tls.reload())
            } else {
                tls.reload_if_changed()
            }
        })
        .await;
        let cert = self.files.cert_file.display().to_string();
        match outcome {
            Ok(None) => {}
            Ok(Some(Ok(()))) => tracing::info!(%cert, why, "TLS certificate reloaded"),
            Ok(Some(Err(error))) => tracing::error!(
                %error,
                why,
                "TLS certificate reload failed; the previous certificate stays in use"
            ),
            Err(error) => tracing::error!(%error, "TLS certificate reload panicked"),
        }
    }

    /// Starts the task that reloads the certificate on SIGHUP and when the
    /// files change, until `shutdown`. The signal handler is installed
    /// before this returns, so a SIGHUP sent afterwards never kills the
    /// process.
    pub(crate) fn spawn_watcher(self: &Arc<Self>, mut shutdown: Shutdown) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; TLS files are still watched");
                None
            }
        };
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(tls.files.watch_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let sighup = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = shutdown.wait() => break,
                    Some(()) = sighup => tls.reload_logged("SIGHUP", true).await,
                    _ = tick.tick() => tls.reload_logged("files changed", false).await,
                }
            }
        });
    }

    /// The TLS handshake of one connection, bounded by `timeout`. A client
    /// that is not speaking TLS is answered (plain HTTP gets a 400 saying
    /// so) and closed; a failed handshake is closed. Either way `None`.
    pub(crate) async fn handshake<S>(
        &self,
        mut stream: S,
        remote: SocketAddr,
        timeout: Duration,
    ) -> Option<TlsStream<Rewind<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let opened = tokio::time::timeout(timeout, async {
            let mut first = [0u8; 1];
            if stream.read(&mut first).await? == 0 {
                return Ok::<_, io::Error>(Opening::Closed);
            }
            if first[0] != HANDSHAKE_RECORD {
                return Ok(Opening::NotTls(stream, first[0]));
            }
            let rewound = Rewind::new(first[0], stream);
            Ok(match self.acceptor.accept(rewound).into_fallible().await {
                Ok(tls) => Opening::Tls(tls),
                Err((error, rewound)) => Opening::Failed(rewound.into_inner(), error),
            })
        })
        .await;
        match opened {
            Ok(Ok(Opening::Tls(tls))) => Some(tls),
            Ok(Ok(Opening::Closed)) => None,
            Ok(Ok(Opening::NotTls(stream, first))) => {
                tracing::debug!(%remote, first, "not a TLS client on the TLS port; closing");
                let plain_http = first.is_ascii_uppercase();
                let answer = plain_http.then(|| {
                    format!(
                        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
                        PLAIN_HTTP_BODY.len()
                    )
                });
                refuse(stream, answer.as_deref().map(str::as_bytes)).await;
                None
            }
            Ok(Ok(Opening::Failed(stream, error))) => {
                tracing::debug!(%remote, %error, "TLS handshake failed");
                refuse(stream, None).await;
                None
            }
            Ok(Err(error)) => {
                tracing::debug!(%remote, %error, "connection failed before the TLS handshake");
                None
            }
            Err(_) => {
                tracing::debug!(%remote, ?timeout, "TLS handshake timed out");
                None
            }
        }
    }
}

/// How a connection's first bytes went. Short-lived (one per handshake,
/// moved once), so the large TLS variant is not boxed.
#[allow(clippy::large_enum_variant)]
enum Opening<S> {
    /// A completed handshake.
    Tls(TlsStream<Rewind<S>>),
    /// The client closed before sending anything.
    Closed,
    /// The first byte was not a TLS handshake record.
    NotTls(S, u8),
    /// rustls refused the handshake (it has sent its alert).
    Failed(S, io::Error),
}

/// Reads both files.
fn read(files: &TlsFiles) -> Result<Contents, TlsError> {
    let read_one = |variable, path: &std::path::Path| {
        std::fs::read(path).map_err(|error| TlsError {
            variable,
            path: path.display().to_string(),
            reason: format!("cannot read it: {error}"),
        })
    };
    Ok(Contents {
        cert: read_one(CERT_VARIABLE, &files.cert_file)?,
        key: read_one(KEY_VARIABLE, &files.key_file)?,
    })
}

/// The certificate chain and signing key in `contents`, checked to belong
/// together.
fn certified_key(
    contents: &Contents,
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError {
        variable: CERT_VARIABLE,
        path: files.cert_file.display().to_string(),
        reason,
    };
    let key_error = |reason: String| TlsError {
        variable: KEY_VARIABLE,
        path: files.key_file.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&contents.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| cert_error(format!("not a PEM certificate chain ({error})")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|error| {
        key_error(format!(
            "holds no PEM private key (PKCS#8, RSA or EC) ({error})"
        ))
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| key_error(format!("unusable private key ({error})")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; rustls accepts it.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(key_error(format!(
                "is not the key of the certificate in {CERT_VARIABLE}"
            )))
        }
        Err(error) => Err(cert_error(format!("unusable certificate ({error})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` and its key, as PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &std::path::Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            watch_interval: Duration::from_secs(3600),
        }
    }

    fn write(files: &TlsFiles, (cert, key): &(String, String)) {
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
    }

    /// The leaf certificate new handshakes get.
    fn served(tls: &Tls) -> CertificateDer<'static> {
        tls.store.current.read().unwrap().cert[0].clone()
    }

    fn leaf(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn every_unusable_file_is_an_error_naming_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let good = self_signed("localhost");

        let missing = Tls::load(&files).unwrap_err();
        assert_eq!(missing.variable, CERT_VARIABLE);
        assert!(
            missing.to_string().contains("WS_TLS_CERT_FILE"),
            "{missing}"
        );
        assert!(missing.reason.contains("cannot read"), "{missing}");

        write(&files, &("not pem at all".to_owned(), good.1.clone()));
        let garbage = Tls::load(&files).unwrap_err();
        assert_eq!(garbage.variable, CERT_VARIABLE, "{garbage}");

        let corrupt = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        write(&files, &(corrupt.to_owned(), good.1.clone()));
        let corrupt = Tls::load(&files).unwrap_err();
        assert_eq!(corrupt.variable, CERT_VARIABLE, "{corrupt}");

        write(&files, &(good.0.clone(), good.0.clone()));
        let no_key = Tls::load(&files).unwrap_err();
        assert_eq!(no_key.variable, KEY_VARIABLE, "{no_key}");
        assert!(no_key.to_string().contains("WS_TLS_KEY_FILE"), "{no_key}");

        let other = self_signed("localhost");
        write(&files, &(good.0.clone(), other.1));
        let mismatch = Tls::load(&files).unwrap_err();
        assert_eq!(mismatch.variable, KEY_VARIABLE, "{mismatch}");
        assert!(mismatch.reason.contains("not the key"), "{mismatch}");

        write(&files, &good);
        assert!(Tls::load(&files).is_ok());
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let first = self_signed("localhost");
        write(&files, &first);
        let tls = Tls::load(&files).unwrap();
        assert_eq!(served(&tls), leaf(&first.0));
        assert_eq!(tls.reload_if_changed(), None, "nothing changed yet");

        let second = self_signed("localhost");
        write(&files, &second);
        assert_eq!(tls.reload_if_changed(), Some(Ok(())));
        assert_eq!(served(&tls), leaf(&second.0));

        // Half a rotation: a new certificate beside the old key.
        let third = self_signed("localhost");
        std::fs::write(&files.cert_file, &third.0).unwrap();
        let refused = tls.reload_if_changed().unwrap().unwrap_err();
        assert_eq!(refused.variable, KEY_VARIABLE);
        assert_eq!(served(&tls), leaf(&second.0), "the old one stays");
        assert_eq!(tls.reload_if_changed(), None, "refused once, not again");
        assert!(tls.reload().is_err(), "a forced reload retries");

        std::fs::write(&files.key_file, &third.1).unwrap();
        assert_eq!(tls.reload_if_changed(), Some(Ok(())));
        assert_eq!(served(&tls), leaf(&third.0));

        std::fs::remove_file(&files.key_file).unwrap();
        assert_eq!(
            tls.reload_if_changed(),
            None,
            "a missing file is waited out"
        );
        assert_eq!(tls.reload().unwrap_err().variable, KEY_VARIABLE);
        assert_eq!(served(&tls), leaf(&third.0));
    }

    /// A transmit written through TLS is complete only once the encrypted bytes
    /// rustls kept (the transport was full) are out too; otherwise the tail
    /// of a message would wait for the next write, possibly forever.
    #[tokio::test]
    async fn a_write_over_tls_completes_only_when_every_encrypted_byte_is_out() {
        use crate::shell::socket::Buffered;
        use crate::shell::write::PendingWrite;

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write(&files, &(cert.pem(), key.serialize_pem()));
        let tls = Tls::load(&files).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(tls.provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));

        // A transport that holds 1 KiB: every write of the transmit fills it.
        let (client_io, server_io) = tokio::io::duplex(1024);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(
            connector.connect(name, client_io),
            tls.acceptor.accept(server_io)
        );
        let (mut client, server) = (client.unwrap(), server.unwrap());
        let socket = Buffered::new(server);

        let frames: Vec<bytes::Bytes> = (0..64u8)
            .map(|i| bytes::Bytes::from(vec![i; 3000]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut write = PendingWrite::new(crate::core::Transmit {
            conn: crate::core::ConnId::new(0, 0),
            frames,
            oldest_ingest: None,
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.map(|_| got == expected)
        });
        assert!(
            write.try_write(&socket).is_pending(),
            "the transport is full"
        );
        tokio::time::timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| write.poll_write(&socket, cx)),
        )
        .await
        .expect("the write completes")
        .unwrap();
        // Nothing else is written: the reader must get every byte from
        // this write alone.
        let whole = tokio::time::timeout(Duration::from_secs(10), reader).await;
        assert!(
            matches!(whole, Ok(Ok(Ok(true)))),
            "every byte arrives: {whole:?}"
        );
        drop(socket);
    }
}
