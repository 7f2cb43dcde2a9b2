//! TLS to the broker (`mqtts://`): rustls with ring as its crypto
//! provider. The broker's certificate is checked against the CA file the
//! settings name (`mqtt_ca`) or else the system's roots; a client
//! certificate (`mqtt_cert` with `mqtt_key`) is offered when named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::watch::SettingError;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files a TLS connection uses, as the settings name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the broker's certificate (PEM); the system's
    /// roots when absent.
    pub ca: Option<PathBuf>,
    /// This client's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// The first file named, with its settings key (for "not mqtts://").
    pub fn first(&self) -> Option<(&'static str, &Path)> {
        [
            ("mqtt_ca", &self.ca),
            ("mqtt_cert", &self.cert),
            ("mqtt_key", &self.key),
        ]
        .into_iter()
        .find_map(|(k, p)| p.as_deref().map(|p| (k, p)))
    }
}

/// The rustls client configuration for `files`; every problem is one line
/// naming its settings key and file.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, SettingError> {
    // The client's own files first: their problems do not depend on what
    // this machine trusts.
    let client = match (&files.cert, &files.key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, read_certs("mqtt_cert", c)?, k, read_key(k)?)),
        (Some(c), None) => {
            return Err(format!(
                "mqtt_cert {}: no mqtt_key names its private key",
                c.display()
            )
            .into())
        }
        (None, Some(k)) => {
            return Err(format!(
                "mqtt_key {}: no mqtt_cert names its certificate",
                k.display()
            )
            .into())
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(p) => {
            for c in read_certs("mqtt_ca", p)? {
                roots
                    .add(c)
                    .map_err(|e| format!("mqtt_ca {}: {e}", p.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "mqtts://: this system has no CA certificates to check the broker with \
                     (install ca-certificates, or name the broker's CA with mqtt_ca)"
                        .into(),
                );
            }
        }
    }
    // ring, not aws-lc-rs: ring cross-compiles for the boards with the
    // plain cross gcc. rustls marks ring's provider deprecated for its lack
    // of post-quantum key exchange, which no MQTT broker requires.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("mqtts://: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((c, chain, k, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            format!(
                "mqtt_cert {} with mqtt_key {}: {e}{}",
                c.display(),
                k.display(),
                v1_hint(&format!("{e:?}"))
            )
        })?,
    };
    Ok(Arc::new(config))
}

/// Said after a certificate error whose text (`Debug` of rustls' error)
/// names an X.509 version 1 certificate: what `openssl x509 -req` makes
/// without extensions, which brokers take and TLS clients refuse.
pub fn v1_hint(error: &str) -> &'static str {
    if error.contains("UnsupportedCertVersion") {
        " (an X.509 version 1 certificate: issue it as version 3, e.g. openssl x509 -req ... -extfile EXT where EXT says basicConstraints=CA:FALSE)"
    } else {
        ""
    }
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: a broken PEM file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("mqtt_key {}: {e}", path.display()))?;
    if crate::watch::secrets::world_readable(path) {
        log::warn!(
            "mqtt_key {}: every user of this machine can read it (chmod 600; for the packaged service, group clip-edge and chmod 640)",
            path.display()
        );
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "mqtt_key {}: no private key in it (expected PEM, -----BEGIN PRIVATE KEY-----): {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tls_files_are_named_in_one_line() {
        let dir = std::env::temp_dir().join(format!("clip-edge-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let files = |ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>| TlsFiles {
            ca: ca.map(Path::to_path_buf),
            cert: cert.map(Path::to_path_buf),
            key: key.map(Path::to_path_buf),
        };
        let missing = dir.join("missing.pem");
        let e = client_config(&files(Some(&missing), None, None))
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("mqtt_ca ") && e.contains("missing.pem"),
            "{e}"
        );
        let e = client_config(&files(Some(&junk), None, None))
            .unwrap_err()
            .0;
        assert!(e.contains("no certificate in it"), "{e}");
        let e = client_config(&files(None, Some(&junk), None))
            .unwrap_err()
            .0;
        assert!(e.contains("no mqtt_key"), "{e}");
        let e = client_config(&files(None, None, Some(&junk)))
            .unwrap_err()
            .0;
        assert!(e.contains("no mqtt_cert"), "{e}");
        for e in [
            client_config(&files(Some(&junk), None, None))
                .unwrap_err()
                .0,
            client_config(&files(None, Some(&missing), Some(&junk)))
                .unwrap_err()
                .0,
        ] {
            assert!(!e.contains('\n'), "{e}");
        }
        assert_eq!(
            files(None, Some(&junk), None).first(),
            Some(("mqtt_cert", junk.as_path()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
