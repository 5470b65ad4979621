# Publishes batches through POST /api/publish/batch for a fixed time with a
# few keep-alive connections; prints messages/s answered 200.
import http.client, json, sys, threading, time
host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
batch, workers, secs = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
body = json.dumps([{"channel": f"pnl:{i % 50}", "data": {"pnl": i, "pad": "x" * 64}} for i in range(batch)])
ok = [0]; bad = [0]; lock = threading.Lock()
end = time.time() + secs
def run():
    c = http.client.HTTPConnection(host, port, timeout=30)
    while time.time() < end:
        c.request("POST", "/api/publish/batch", body, {"X-API-Key": key, "Content-Type": "application/json"})
        r = c.getresponse(); data = r.read()
        with lock:
            if r.status == 200: ok[0] += batch
            else: bad[0] += 1; print(r.status, data[:200])
ts = [threading.Thread(target=run) for _ in range(workers)]
t0 = time.time(); [t.start() for t in ts]; [t.join() for t in ts]; el = time.time() - t0
print(json.dumps({"batch": batch, "workers": workers, "seconds": round(el, 1), "messages": ok[0], "messages_per_s": round(ok[0] / el), "failed_requests": bad[0]}))
