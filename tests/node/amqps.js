// amqplib over amqps:// against the broker, driven by tests/python/test_amqplib.py.
//
//   node amqps.js round-trip PORT CA_PEM   publishes with confirms, consumes, acks
//   node amqps.js connect PORT CA_PEM      only connects (for a CA the broker's
//                                          certificate does not chain to)
//
// Prints one JSON line with what happened, for the Python test to assert on; exits 0
// unless the script itself broke.
'use strict';

const fs = require('fs');
const amqp = require('amqplib');

async function roundTrip(conn) {
  const ch = await conn.createConfirmChannel();
  const q = (await ch.assertQueue('', { exclusive: true })).queue;
  const confirmed = await new Promise((resolve) => {
    ch.sendToQueue(q, Buffer.from('hello over TLS'), { messageId: 'm1', persistent: false },
      (err) => resolve(err ? `nack: ${err}` : 'ack'));
  });
  await ch.waitForConfirms();
  const got = await new Promise((resolve, reject) => {
    ch.consume(q, (msg) => {
      ch.ack(msg);
      resolve({
        body: msg.content.toString(),
        messageId: msg.properties.messageId,
        redelivered: msg.fields.redelivered,
        routingKey: msg.fields.routingKey,
      });
    }).catch(reject);
  });
  await ch.close();
  return { confirmed, got };
}

async function main() {
  const [mode, port, caPath] = process.argv.slice(2);
  const url = `amqps://guest:guest@127.0.0.1:${port}/`;
  const socketOptions = { ca: [fs.readFileSync(caPath)], servername: 'localhost' };
  let conn;
  try {
    conn = await amqp.connect(url, socketOptions);
  } catch (err) {
    console.log(JSON.stringify({ connected: false, error: String(err && (err.code || err.message)) }));
    return;
  }
  const result = { connected: true };
  if (mode === 'round-trip') {
    Object.assign(result, await roundTrip(conn));
  }
  await conn.close();
  console.log(JSON.stringify(result));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
