"""Times GET /api/queues pages with N queues (default 10,000): run by scripts/bench-api-paging.sh
with a broker it started; arguments: AMQP port, API base URL, N."""
import base64, json, sys, time, urllib.request
import pika

amqp_port, http = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
ch = c.channel()
for i in range(n):
    ch.queue_declare(f"bench-{i:05d}")
ch.basic_publish("", "bench-00042", b"x")
tok = base64.b64encode(b"guest:guest").decode()

def get(path):
    r = urllib.request.Request(http + path, headers={"authorization": "Basic " + tok})
    t = time.perf_counter()
    with urllib.request.urlopen(r, timeout=120) as resp:
        body = resp.read()
    return time.perf_counter() - t, body

for path in ["/api/queues?page=1&page_size=100", f"/api/queues?page={max(1, n // 200)}&page_size=100&name=bench",
             "/api/queues?page=1&page_size=100&sort=messages&sort_reverse=true", "/api/queues"]:
    times = []
    for _ in range(5):
        dt, body = get(path)
        times.append(dt * 1000)
    times.sort()
    print(f"{path}: median {times[2]:.1f} ms (min {times[0]:.1f}, max {times[-1]:.1f}), {len(body)} bytes")
dt, body = get("/api/queues?page=1&page_size=1&sort=messages&sort_reverse=true&columns=name,messages")
print(json.loads(body)["items"])
# a shared broker (the reference RabbitMQ) gets its queues back
for i in range(n):
    ch.queue_delete(f"bench-{i:05d}")
c.close()
