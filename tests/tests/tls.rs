//! AMQPS with lapin (rustls): a CA, a server certificate and a client certificate made at
//! run time with rcgen; the broker serves `--tls-listen` with `--tls-verify-peer`, and
//! lapin logs in with SASL EXTERNAL as the client certificate's common name.

use broker_tests::*;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A CA and what it signed, as PEM.
struct Pki {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p.to_string_lossy().into_owned()
}

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate for
/// the user `client_cn`.
fn pki(client_cn: &str) -> Pki {
    let dir =
        std::env::temp_dir().join(format!("broker-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, client_cn);
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    write(&dir, "ca.pem", &ca.pem());
    write(&dir, "server.pem", &server.pem());
    write(&dir, "server.key", &server_key.serialize_pem());
    Pki {
        dir,
        ca: ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn start(pki: &Pki, tls_port: u16) -> Broker {
    let d = |f: &str| pki.dir.join(f).to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{tls_port}");
    Broker::start_with(&[
        "--tls-listen",
        &listen,
        "--tls-cert",
        &d("server.pem"),
        "--tls-key",
        &d("server.key"),
        "--tls-ca",
        &d("ca.pem"),
        "--tls-verify-peer",
    ])
}

async fn connect_tls(pki: &Pki, uri: &str) -> lapin::Result<Connection> {
    let tls = OwnedTLSConfig {
        identity: Some(OwnedIdentity::PKCS8 {
            pem: pki.client_cert.clone().into_bytes(),
            key: pki.client_key.clone().into_bytes(),
        }),
        cert_chain: Some(pki.ca.clone()),
    };
    Connection::connect_with_config(
        uri,
        ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
}

#[tokio::test]
async fn lapin_amqps_with_external_login_round_trips() {
    let pki = pki("guest");
    let tls_port = free_port();
    let _broker = start(&pki, tls_port);
    let uri = format!("amqps://localhost:{tls_port}/%2f?auth_mechanism=external");
    let conn = connect_tls(&pki, &uri).await.expect("amqps connection");
    let ch = conn.create_channel().await.unwrap();
    let q = unique("tls");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"over tls",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"over tls");
    conn.close(200, "bye".into()).await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn lapin_external_login_of_an_unknown_user_is_refused() {
    let pki = pki("nobody-here");
    let tls_port = free_port();
    let _broker = start(&pki, tls_port);
    let uri = format!("amqps://localhost:{tls_port}/%2f?auth_mechanism=external");
    let err = connect_tls(&pki, &uri).await.expect_err("refused");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    // PLAIN is still offered on the TLS port, for a client with a certificate
    let uri = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
    let conn = connect_tls(&pki, &uri).await.expect("PLAIN over TLS");
    conn.close(200, "bye".into()).await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}
