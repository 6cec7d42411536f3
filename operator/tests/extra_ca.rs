//! The HTTP client used for sources and products trusts an extra CA bundle (`UC_EXTRA_CA_FILE`):
//! against a real TLS server whose certificate a private CA signed, a request fails without the
//! bundle and succeeds with it; a bad bundle is refused with a message naming the variable and file.
//!
//! The CA and the server certificate are made with the `openssl` command line tool.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use unified_connectors::http;

struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`srv.pem`, `srv.key`).
fn make_pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("uc-extra-ca-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=uc-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&dir, &csr);
    std::fs::write(
        dir.join("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "srv.ext",
        ],
    );
    Pki { dir }
}

/// An HTTPS server on a loopback port answering `200 ok` to each of up to `n` connections.
fn serve_tls(pki: &Pki, n: usize) -> u16 {
    http::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.dir.join("srv.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.dir.join("srv.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut buf = [0u8; 4096];
            // A client that refuses the certificate aborts the handshake: the read fails.
            if tls.read(&mut buf).is_ok_and(|n| n > 0) {
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    port
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_its_bundle_is_given() {
    let pki = make_pki("trust");
    let port = serve_tls(&pki, 2);
    let url = format!("https://127.0.0.1:{port}/");

    let system_only = http::try_client(Duration::from_secs(10), &[]).unwrap();
    let err = system_only
        .get(&url)
        .send()
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    let extra = http::load_ca_bundle(&pki.dir.join("ca.pem")).unwrap();
    assert_eq!(extra.len(), 1);
    let trusting = http::try_client(Duration::from_secs(10), &extra).unwrap();
    let resp = trusting
        .get(&url)
        .send()
        .await
        .expect("trusted through the extra CA");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
}

#[test]
fn a_bad_bundle_is_refused_naming_the_variable_and_the_file() {
    let pki = make_pki("bad");
    let missing = pki.dir.join("nope.pem");
    let err = http::load_ca_bundle(&missing).unwrap_err();
    assert!(
        err.contains(http::EXTRA_CA_ENV) && err.contains("nope.pem") && err.contains("cannot read"),
        "{err}"
    );
    // A private key is PEM, but not a certificate.
    let err = http::load_ca_bundle(&pki.dir.join("ca.key")).unwrap_err();
    assert!(err.contains("ca.key"), "{err}");
    assert!(
        err.contains("no certificate") || err.contains("PEM"),
        "{err}"
    );
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err = http::load_ca_bundle(&garbage).unwrap_err();
    assert!(err.contains("garbage.pem"), "{err}");
}
