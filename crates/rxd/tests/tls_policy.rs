//! The HTTPS listener's TLS policy, checked with an independent client (OpenSSL's s_client).
//! Each refusal must come from the server (an alert it sent), not from the client declining to
//! offer something, so the client is told to offer the legacy option (SECLEVEL=0) and each
//! refusal has a passing control next to it.

use rxd_testkit::{require_root, TestDaemon};
use std::process::{Command, Stdio};

struct Outcome {
    ok: bool,
    text: String,
}

fn s_client(port: u16, args: &[&str]) -> Outcome {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (apt-get install -y openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && !text.contains("Cipher is (NONE)");
    Outcome { ok, text }
}

fn refused_by_server(o: &Outcome, what: &str) {
    assert!(!o.ok, "{what} must be refused:\n{}", o.text);
    assert!(
        o.text.contains("SSL alert number"),
        "{what}: the server must refuse it with an alert:\n{}",
        o.text
    );
}

fn accepted(o: &Outcome, what: &str) {
    assert!(o.ok, "{what} must work:\n{}", o.text);
}

#[tokio::test]
async fn tls_versions_suites_and_signatures() {
    if !require_root("tls_versions_suites_and_signatures") {
        return;
    }
    let d = TestDaemon::start().await;
    let p = d.https_port();
    let legacy = "DEFAULT@SECLEVEL=0";

    refused_by_server(&s_client(p, &["-tls1", "-cipher", legacy]), "TLS 1.0");
    refused_by_server(&s_client(p, &["-tls1_1", "-cipher", legacy]), "TLS 1.1");
    accepted(&s_client(p, &["-tls1_3"]), "TLS 1.3");
    let o = s_client(p, &["-tls1_3"]);
    assert!(o.text.contains("TLSv1.3"), "{}", o.text);

    // TLS 1.2: ECDHE with AEAD only.
    accepted(
        &s_client(p, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]),
        "TLS 1.2 ECDHE-ECDSA AES-GCM",
    );
    accepted(
        &s_client(p, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]),
        "TLS 1.2 ECDHE-ECDSA ChaCha20",
    );
    refused_by_server(
        &s_client(p, &["-tls1_2", "-cipher", "AES256-GCM-SHA384"]),
        "static RSA key exchange",
    );
    refused_by_server(
        &s_client(p, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"]),
        "CBC suite",
    );
    refused_by_server(
        &s_client(
            p,
            &[
                "-tls1_2",
                "-cipher",
                &format!("ECDHE-ECDSA-AES256-SHA:{legacy}"),
            ],
        ),
        "CBC-SHA1 suite",
    );
    refused_by_server(
        &s_client(
            p,
            &[
                "-tls1_2",
                "-cipher",
                &format!("DHE-RSA-AES128-GCM-SHA256:{legacy}"),
            ],
        ),
        "finite-field DHE",
    );

    // SHA-1 signatures are never used.
    refused_by_server(
        &s_client(
            p,
            &[
                "-tls1_2",
                "-cipher",
                legacy,
                "-sigalgs",
                "ECDSA+SHA1:RSA+SHA1",
            ],
        ),
        "SHA-1 signature schemes only",
    );
    accepted(
        &s_client(p, &["-tls1_2", "-sigalgs", "ECDSA+SHA384"]),
        "ECDSA with SHA-384",
    );
}

#[tokio::test]
async fn client_certificate_is_requested_not_required() {
    if !require_root("client_certificate_is_requested_not_required") {
        return;
    }
    let d = TestDaemon::start().await;
    let p = d.https_port();
    // Without a certificate the handshake succeeds (untrusted clients must reach GET /1.0).
    let o = s_client(p, &["-tls1_3"]);
    accepted(&o, "no client certificate");
    // The server asks for one, naming no CA outside PKI mode.
    let o = s_client(p, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(
        o.text.contains("No client certificate CA names sent"),
        "{}",
        o.text
    );
    assert!(
        !o.text.contains("RSA+SHA1") && !o.text.contains("ECDSA+SHA1"),
        "no SHA-1 in the request:\n{}",
        o.text
    );

    // With one, the handshake proves possession of its key, and the certificate reaches requests.
    let id = rxd_testkit::client_identity("tls-test");
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
    std::fs::write(&crt, &id.cert_pem).unwrap();
    std::fs::write(&key, &id.key_pem).unwrap();
    let o = s_client(
        p,
        &[
            "-tls1_3",
            "-cert",
            crt.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
    );
    accepted(&o, "with a client certificate");
    let other = rxd_testkit::client_identity("other");
    std::fs::write(&key, &other.key_pem).unwrap();
    let o = s_client(
        p,
        &[
            "-tls1_3",
            "-cert",
            crt.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        !o.ok,
        "a certificate without its key must not pass:\n{}",
        o.text
    );
}

/// Read until the server closes the connection; returns how long that took.
async fn time_until_closed(mut s: impl tokio::io::AsyncRead + Unpin) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let t = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(90), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server never closed the connection"),
        }
    }
}

#[tokio::test]
async fn slow_and_idle_peers_are_cut_off() {
    if !require_root("slow_and_idle_peers_are_cut_off") {
        return;
    }
    use tokio::io::AsyncWriteExt;
    let d = TestDaemon::start().await;
    let addr = d.https_address();
    let tls = || {
        let pin = rxd_tls::cert::fingerprint_bytes(&d.server_cert_der());
        let (config, _) =
            rxd_tls::client::client_config(rxd_tls::client::ServerTrust::Pinned(pin), None)
                .unwrap();
        tokio_rustls::TlsConnector::from(config)
    };
    let name = || rxd_tls::client::ServerName::try_from("127.0.0.1").unwrap();

    // A peer that connects and never starts the handshake.
    let silent =
        async { time_until_closed(tokio::net::TcpStream::connect(&addr).await.unwrap()).await };
    // A peer that sends half a request head and stops.
    let partial = async {
        let mut s = tls()
            .connect(name(), tokio::net::TcpStream::connect(&addr).await.unwrap())
            .await
            .unwrap();
        s.write_all(b"GET /1.0 HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        time_until_closed(s).await
    };
    // A kept-alive connection left idle after a complete request.
    let idle = async {
        let mut s = tls()
            .connect(name(), tokio::net::TcpStream::connect(&addr).await.unwrap())
            .await
            .unwrap();
        s.write_all(b"GET /1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        time_until_closed(s).await
    };
    let (silent, partial, idle) = tokio::join!(silent, partial, idle);
    // The handshake timeout is 10 s and the header timeout 30 s; the lower bounds show it was the
    // timeout that closed them, the upper bounds that it did.
    assert!(silent.as_secs() >= 9 && silent.as_secs() < 20, "{silent:?}");
    assert!(
        partial.as_secs() >= 29 && partial.as_secs() < 45,
        "{partial:?}"
    );
    assert!(idle.as_secs() >= 29 && idle.as_secs() < 45, "{idle:?}");
    d.wait_for_log("rxd ready", "TLS handshake timed out").await;
    assert!(
        d.unix().get("/1.0").await.is_ok(),
        "the daemon is unaffected"
    );
}
