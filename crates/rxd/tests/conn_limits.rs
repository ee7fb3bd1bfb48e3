//! Connection limits per source against the real daemon, on loopback only (all of 127.0.0.0/8 is
//! local, so a client can bind 127.0.0.2 as its source): one address holding a flood of idle
//! TCP connections (no TLS started) has its excess closed at once, and a trusted client from
//! another address is still served. Alone in its file: it changes this process's descriptor limit.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use rxd_testkit::{client_identity, require_root, TestDaemon};
use rxd_tls::KeyPairFiles;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// More idle connections than the daemon's default soft descriptor limit (1024), from one address.
const FLOOD: usize = 1200;
/// The most connections one source can ever hold (a sixteenth of 4096).
const MOST_PER_SOURCE: usize = 256;

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{source}:0").parse().expect("address"))?;
    match tokio::time::timeout(Duration::from_secs(5), s.connect(to)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// `GET /1.0` over TLS from `source` as `id`; the `auth` the daemon answered with.
async fn get_root_from(d: &TestDaemon, source: &str, id: &KeyPairFiles) -> Result<String, String> {
    let to: SocketAddr = d.https_address().parse().map_err(|e| format!("{e}"))?;
    let pin = rxd_tls::cert::fingerprint_bytes(&d.server_cert_der());
    let (config, _) =
        rxd_tls::client::client_config(rxd_tls::client::ServerTrust::Pinned(pin), Some(id))
            .map_err(|e| e.to_string())?;
    let exchange = async {
        let tcp = connect_from(source, to).await.map_err(|e| e.to_string())?;
        let name = rxd_tls::client::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        tls.write_all(b"GET /1.0 HTTP/1.1\r\nHost: rxd\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        // A close without close_notify is fine: the answer is complete by then.
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .ok_or(format!("no answer: {text:?}"))?;
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
        Ok(v["metadata"]["auth"].as_str().unwrap_or("").to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(r) => r,
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// How many of `conns` the server has closed (end of stream or reset, nothing sent).
fn closed(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    conns
        .iter()
        .filter(|c| match c.try_read(&mut buf) {
            Ok(0) => true,
            Ok(_) => panic!("the server sent bytes to a connection that never started TLS"),
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_address_does_not_lock_out_others() {
    if !require_root("one_flooding_address_does_not_lock_out_others") {
        return;
    }
    // The daemon starts with the usual soft limit of 1024 (it must raise it itself); this test
    // then takes its own back for the flood.
    let ours = getrlimit(Resource::Nofile);
    let daemon_soft = ours.current.map(|c| c.min(1024));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: daemon_soft,
            maximum: ours.maximum,
        },
    )
    .expect("lower the soft descriptor limit");
    let d = TestDaemon::start().await;
    let raised = Rlimit {
        current: ours.maximum,
        maximum: ours.maximum,
    };
    setrlimit(Resource::Nofile, raised).expect("raise the soft descriptor limit");
    assert!(
        getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX) > FLOOD as u64 + 100,
        "the flood needs more descriptors than this host's hard limit allows"
    );
    let id = client_identity("admin");
    d.trust(&id).await;
    assert_eq!(
        get_root_from(&d, "127.0.0.2", &id).await.as_deref(),
        Ok("trusted")
    );

    // The flood: idle connections from 127.0.0.1 that never start TLS.
    let to: SocketAddr = d.https_address().parse().unwrap();
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        if let Ok(c) = connect_from("127.0.0.1", to).await {
            flood.push(c);
        }
    }
    assert!(
        flood.len() >= FLOOD - 10,
        "opened {} connections",
        flood.len()
    );
    // The excess is closed at once, before TLS (checked well within the 10 s handshake timeout
    // that would close the rest); the source keeps a share.
    let mut shut = 0;
    for _ in 0..30 {
        shut = closed(&flood);
        if shut >= flood.len() - MOST_PER_SOURCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shut >= flood.len() - MOST_PER_SOURCE,
        "only {shut} of {} flood connections were closed",
        flood.len()
    );
    assert!(shut < flood.len(), "the source keeps some connections");

    // While the flood is held, a trusted client from elsewhere is served every time.
    for attempt in 0..8 {
        assert_eq!(
            get_root_from(&d, "127.0.0.2", &id).await.as_deref(),
            Ok("trusted"),
            "attempt {attempt} while 127.0.0.1 floods"
        );
    }
    // The daemon raised its own limit, and said what it sized the limits at.
    let logs = d.logs();
    assert!(logs.contains("connection limits"), "{logs}");
    assert!(logs.contains("closing new connections at accept"), "{logs}");
    if ours.maximum.is_none_or(|hard| hard > 1024) {
        assert!(logs.contains("raised the open descriptor limit"), "{logs}");
    }
    drop(flood);
}
