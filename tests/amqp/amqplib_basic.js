// amqplib (RabbitMQ's Node.js client) against Warren's AMQP listener.
//
// Run by tests/amqp_amqplib.rs: node amqplib_basic.js HOST PORT [TLS_PORT CA_FILE], with
// NODE_PATH pointing at the node_modules that holds amqplib. Prints one line per step and
// exits non-zero (with the error) at the first thing that is not as RabbitMQ would do it.
// Every wait is bounded.

"use strict";

const fs = require("node:fs");
const assert = require("node:assert/strict");
const amqp = require("amqplib");

const [host, port, tlsPort, caFile] = process.argv.slice(2);
const url = `amqp://guest:guest@${host}:${port}/%2f`;

/** Rejects if `promise` has not settled within `ms`, naming what was awaited. */
function within(what, promise, ms = 10000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Collects deliveries from `queue` on `ch`; `next()` resolves with the next one. */
async function consumer(ch, queue, options) {
  const waiting = [];
  const ready = [];
  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      const w = waiting.shift();
      if (w) w(msg);
      else ready.push(msg);
    },
    options,
  );
  return {
    consumerTag,
    next: (what) =>
      within(
        what,
        new Promise((resolve) => {
          const m = ready.shift();
          if (m) resolve(m);
          else waiting.push(resolve);
        }),
      ),
    buffered: () => ready.length,
  };
}

async function helloWorld() {
  // Tutorial one, as written: send.js then receive.js.
  const sender = await within("connect", amqp.connect(url));
  const ch = await sender.createChannel();
  await ch.assertQueue("hello", { durable: false });
  ch.sendToQueue("hello", Buffer.from("Hello World!"));
  await ch.close();
  await sender.close();

  const receiver = await within("connect", amqp.connect(url));
  const rch = await receiver.createChannel();
  await rch.assertQueue("hello", { durable: false });
  const c = await consumer(rch, "hello", { noAck: true });
  const msg = await c.next("the hello world message");
  assert.equal(msg.content.toString(), "Hello World!");
  await receiver.close();
  console.log("hello world: ok");
}

async function confirmsPrefetchAndAcks(conn) {
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue("amqplib_jobs", { durable: true });
  const confirmed = [];
  for (let i = 0; i < 100; i++) {
    const body = `job-${String(i).padStart(3, "0")}`;
    ch.sendToQueue(
      "amqplib_jobs",
      Buffer.from(body),
      {
        persistent: true,
        contentType: "text/plain",
        messageId: body,
        headers: { n: i, kind: "job", ok: true, ratio: 0.5 },
      },
      (err) => {
        assert.equal(err, null, `publish ${body} was nacked`);
        confirmed.push(body);
      },
    );
  }
  await within("100 confirms", ch.waitForConfirms());
  assert.equal(confirmed.length, 100);
  console.log("confirm channel, 100 persistent publishes: ok");

  // Prefetch 1: while the first delivery is unacked, the other 99 stay ready.
  const cch = await conn.createChannel();
  await cch.prefetch(1);
  const c = await consumer(cch, "amqplib_jobs", { noAck: false });
  const first = await c.next("the first job");
  assert.equal(first.content.toString(), "job-000");
  assert.equal(first.properties.headers.n, 0);
  assert.equal(first.properties.headers.kind, "job");
  assert.equal(first.properties.headers.ok, true);
  assert.equal(first.properties.headers.ratio, 0.5);
  assert.equal(first.properties.deliveryMode, 2);
  assert.equal(first.properties.contentType, "text/plain");
  const q = await cch.checkQueue("amqplib_jobs");
  assert.equal(q.messageCount, 99, "prefetch 1 holds the rest back");
  assert.equal(c.buffered(), 0, "no second delivery before the ack");
  cch.ack(first);
  for (let i = 1; i < 100; i++) {
    const msg = await c.next(`job ${i}`);
    assert.equal(msg.content.toString(), `job-${String(i).padStart(3, "0")}`);
    assert.equal(msg.properties.headers.n, i);
    cch.ack(msg);
  }
  await cch.cancel(c.consumerTag);
  const drained = await cch.checkQueue("amqplib_jobs");
  assert.equal(drained.messageCount, 0);
  await cch.close();
  await ch.close();
  console.log("consume with prefetch 1 and ack, in order with headers: ok");
}

async function nackRequeue(conn) {
  const ch = await conn.createChannel();
  await ch.assertQueue("amqplib_again", { durable: false });
  ch.sendToQueue("amqplib_again", Buffer.from("again"));
  const c = await consumer(ch, "amqplib_again", { noAck: false });
  const first = await c.next("the message");
  assert.equal(first.fields.redelivered, false);
  ch.nack(first, false, true);
  const second = await c.next("the requeued message");
  assert.equal(second.content.toString(), "again");
  assert.equal(second.fields.redelivered, true);
  ch.ack(second);
  await ch.close();
  console.log("nack with requeue, redelivered: ok");
}

async function notFound(conn) {
  const ch = await conn.createChannel();
  const closed = new Promise((resolve) => ch.once("close", resolve));
  let channelError = null;
  ch.on("error", (e) => {
    channelError = e;
  });
  await assert.rejects(within("checkQueue", ch.checkQueue("amqplib_no_such_queue")), (e) => {
    assert.equal(e.code, 404, String(e));
    assert.match(e.message, /NOT_FOUND/);
    return true;
  });
  await within("the channel closing", closed);
  assert.equal(channelError?.code, 404);
  // A channel error: the connection goes on.
  const other = await conn.createChannel();
  await other.checkQueue("amqplib_again");
  await other.close();
  console.log("404 closes the channel, not the connection: ok");
}

async function overTls() {
  const conn = await within(
    "the amqps connection",
    amqp.connect(`amqps://guest:guest@${host}:${tlsPort}/%2f`, {
      ca: [fs.readFileSync(caFile)],
    }),
  );
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue("amqplib_tls", { durable: false });
  ch.sendToQueue("amqplib_tls", Buffer.from("sealed"));
  await within("the confirm", ch.waitForConfirms());
  const got = await within("basic.get", ch.get("amqplib_tls", { noAck: true }));
  assert.ok(got, "a message");
  assert.equal(got.content.toString(), "sealed");
  await conn.close();
  console.log("amqps with the test's CA: ok");
}

async function main() {
  await helloWorld();
  const conn = await within("connect", amqp.connect(url));
  conn.on("error", (e) => {
    throw e;
  });
  await confirmsPrefetchAndAcks(conn);
  await nackRequeue(conn);
  await notFound(conn);
  await conn.close();
  if (tlsPort) await overTls();
  console.log("all ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
