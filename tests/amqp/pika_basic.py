"""pika (RabbitMQ's Python client) against Warren's AMQP listener.

Run by tests/amqp_pika.rs: python pika_basic.py HOST PORT. Prints one line per step and
exits non-zero (with pika's or an assertion's traceback) at the first thing that is not as
RabbitMQ would do it. Every wait is bounded.
"""

import sys

import pika

host, port = sys.argv[1], int(sys.argv[2])
params = pika.ConnectionParameters(
    host=host,
    port=port,
    virtual_host="/",
    credentials=pika.PlainCredentials("guest", "guest"),
    blocked_connection_timeout=10,
    socket_timeout=10,
)

# Tutorial one, as written: send.py then receive.py.
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue="hello")
channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")
connection.close()

connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue="hello")
got = []
for method, properties, body in channel.consume(
    "hello", auto_ack=True, inactivity_timeout=10
):
    assert method is not None, "no delivery within 10 s"
    got.append(body)
    break
channel.cancel()
assert got == [b"Hello World!"], got
print("hello world: ok")

# Publisher confirms: persistent messages to a durable queue, each confirmed.
channel.confirm_delivery()
channel.queue_declare(queue="pika_jobs", durable=True)
sent = []
for i in range(100):
    body = "job-%03d" % i
    # With confirms on, basic_publish returns once the broker acked; a nack raises.
    channel.basic_publish(
        exchange="",
        routing_key="pika_jobs",
        body=body,
        properties=pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="text/plain",
            correlation_id="c-%d" % i,
            headers={"n": i, "who": "pika", "nested": {"ok": True}},
        ),
        mandatory=True,
    )
    sent.append(body)
print("confirmed publishes: ok (%d)" % len(sent))

# A mandatory message nobody takes comes back: pika raises UnroutableError.
try:
    channel.basic_publish(
        exchange="", routing_key="no-such-queue", body="lost", mandatory=True
    )
    raise AssertionError("an unroutable mandatory publish was not returned")
except pika.exceptions.UnroutableError as e:
    assert e.messages[0].body == b"lost", e.messages
print("mandatory return: ok")

# Consume with manual acks and prefetch; nack (requeue) one, it comes back redelivered.
channel.basic_qos(prefetch_count=10)
received = []
nacked = None
for method, properties, body in channel.consume(
    "pika_jobs", auto_ack=False, inactivity_timeout=10
):
    assert method is not None, "no delivery within 10 s after %r" % received[-1:]
    if body == b"job-050" and nacked is None:
        nacked = method.delivery_tag
        channel.basic_nack(method.delivery_tag, requeue=True)
        continue
    if body == b"job-050":
        assert method.redelivered, "a requeued message is redelivered"
    i = int(body[4:])
    assert properties.correlation_id == "c-%d" % i, properties
    assert properties.delivery_mode == 2, properties
    assert properties.content_type == "text/plain", properties
    assert properties.headers == {"n": i, "who": "pika", "nested": {"ok": True}}, (
        properties.headers
    )
    received.append(body.decode())
    channel.basic_ack(method.delivery_tag)
    if len(received) == len(sent):
        break
channel.cancel()
assert nacked is not None
assert sorted(received) == sent, received
print("consume, ack, nack and redelivery: ok")

# Everything acked: the queue is empty.
ok = channel.queue_declare(queue="pika_jobs", durable=True, passive=True)
assert ok.method.message_count == 0, ok.method
# A passive declare of a missing queue closes the channel with 404, not the connection.
try:
    channel.queue_declare(queue="missing", passive=True)
    raise AssertionError("a missing queue was declared passively")
except pika.exceptions.ChannelClosedByBroker as e:
    assert e.reply_code == 404, e
assert connection.is_open
channel = connection.channel()
channel.queue_delete(queue="pika_jobs")
connection.close()
print("refusals: ok")
print("pika %s: all ok" % pika.__version__)
