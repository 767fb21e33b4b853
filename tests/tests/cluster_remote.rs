//! Two brokers started as one cluster (`--cluster-peers`, docs/design/cluster.md §6): a
//! durable queue declared through the first takes confirmed persistent publishes made
//! through the second, and the second gets them back (basic.get, acked) in order with
//! their headers, half with basic.get and half through a consumer (basic.consume with a
//! prefetch, acked); the first sees the queue empty afterwards.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use std::path::PathBuf;

/// A secret file only its owner can read, as `--cluster-secret-file` wants.
fn secret_file() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("broker-cluster-secret-{}", free_port()));
    std::fs::write(&path, "remote-queue-test-secret").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Two nodes started together (each waits for the other before it serves AMQP).
fn two_nodes() -> (Broker, Broker) {
    let secret = secret_file();
    let ports = [free_port(), free_port()];
    let peers = format!("a@127.0.0.1:{},b@127.0.0.1:{}", ports[0], ports[1]);
    let start = |name: &'static str, port: u16| {
        let (peers, secret) = (peers.clone(), secret.display().to_string());
        std::thread::spawn(move || {
            let listen = format!("127.0.0.1:{port}");
            Broker::start_with(&[
                "--node-name",
                name,
                "--cluster-listen",
                &listen,
                "--cluster-peers",
                &peers,
                "--cluster-secret-file",
                &secret,
            ])
        })
    };
    let (a, b) = (start("a", ports[0]), start("b", ports[1]));
    (a.join().unwrap(), b.join().unwrap())
}

#[tokio::test]
async fn publish_through_one_node_get_and_consume_through_it_from_a_queue_on_the_other() {
    let (a, b) = two_nodes();
    let (_ca, cha) = a.channel().await;
    cha.queue_declare(
        "remote".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // the record reaches b through the metadata group
    let mut seen = false;
    for _ in 0..100 {
        let (_c, ch) = b.channel().await;
        if passive_queue(&ch, "remote").await.is_ok() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "queue record not on node b");
    let (_cb, chb) = b.channel().await;
    chb.confirm_select(Default::default()).await.unwrap();
    for i in 0..100 {
        let mut h = FieldTable::default();
        h.insert(ShortString::from("i"), AMQPValue::LongInt(i));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(h);
        chb.basic_publish(
            "".into(),
            "remote".into(),
            Default::default(),
            format!("m{i}").as_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    assert!(
        chb.wait_for_confirms().await.unwrap().is_empty(),
        "every publish confirmed"
    );
    assert_eq!(
        passive_queue(&cha, "remote").await.unwrap().message_count(),
        100
    );
    for i in 0..50 {
        let m = chb
            .basic_get("remote".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
        let h = m.delivery.properties.headers().clone().unwrap();
        assert_eq!(h.inner().get("i"), Some(&AMQPValue::LongInt(i)));
        m.delivery.ack(Default::default()).await.unwrap();
    }
    // the rest through a consumer on b, 10 unacked at a time
    chb.basic_qos(10, Default::default()).await.unwrap();
    let mut consumer = chb
        .basic_consume(
            "remote".into(),
            "across".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 50..100 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10s")
            .expect("the consumer is open")
            .unwrap();
        assert_eq!(d.data, format!("m{i}").as_bytes());
        assert!(!d.redelivered);
        assert_eq!(d.routing_key.as_str(), "remote");
        let h = d.properties.headers().clone().unwrap();
        assert_eq!(h.inner().get("i"), Some(&AMQPValue::LongInt(i)));
        d.ack(Default::default()).await.unwrap();
    }
    let mut left = u32::MAX;
    for _ in 0..100 {
        left = passive_queue(&cha, "remote").await.unwrap().message_count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the acks reached the home");
}
