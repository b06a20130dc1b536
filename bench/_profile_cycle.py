"""Scratch: per-endpoint in-process latency (not committed)."""
import os, sys, time, cProfile, pstats
os.environ["BENCH_DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/af_queue_prof"
sys.path.insert(0, os.path.dirname(__file__))
from _common import reset_database, setup_django
reset_database(); setup_django()
from django.test import Client
from agents.models import AgentProfile, RuntimeConfig
from claim_throughput import seed, token_for
agent = AgentProfile.objects.create(agent_key="bench"); RuntimeConfig.get()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
seed(agent, ["own-0"], N + 5)
token = token_for("w-0")
c = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
api = "/api/v1/worker"
times = {"trivial": [], "claim": [], "heartbeat": [], "complete": []}
def run():
    for _ in range(N):
        t = time.perf_counter(); c.post("/bench/trivial/", {}, content_type="application/json"); times["trivial"].append(time.perf_counter() - t)
        t = time.perf_counter(); job = c.post(f"{api}/claim/", {"conversation_id": "own-0"}, content_type="application/json").json()["job"]; times["claim"].append(time.perf_counter() - t)
        lease = {"lease_id": job["lease_id"]}
        t = time.perf_counter(); assert c.post(f"{api}/jobs/{job['message_id']}/heartbeat/", lease, content_type="application/json").status_code == 200; times["heartbeat"].append(time.perf_counter() - t)
        t = time.perf_counter(); assert c.post(f"{api}/jobs/{job['message_id']}/complete/", lease, content_type="application/json").status_code == 200; times["complete"].append(time.perf_counter() - t)
if os.environ.get("PROFILE"):
    cProfile.run("run()", "/tmp/queue_bench/prof.out")
    pstats.Stats("/tmp/queue_bench/prof.out").sort_stats("cumulative").print_stats(45)
else:
    run()
for k, v in times.items():
    v = sorted(v)[N // 10:]
    print(f"{k:10s} mean {sum(v)/len(v)*1000:.2f} ms  median {v[len(v)//2]*1000:.2f}")
t = sum(sorted(times['trivial'])[N//2] for _ in [0])
q = sum(sorted(times[k])[N//2] for k in ('claim','heartbeat','complete')) / 3
print(f"median ratio trivial/queue-request: {t/q:.2f}")
