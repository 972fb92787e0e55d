"Telemetry: real host readings, real threads, a real SQLite prediction log in tmp_path."
import socket, threading, time
import psutil, pytest
from parkml.predlog import open_store
from parkml.telemetry import sample_host, LatencyStats, latency_summary, TelemetrySampler

@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/predlog.db", tmp_path/'frames')
    yield s
    s.close()

def test_sample_host_is_plausible(tmp_path):
    s = sample_host(path=tmp_path)
    assert s['host'] == socket.gethostname() and abs(s['ts'] - time.time()) < 5
    assert 0 <= s['cpu_pct'] <= 100 and 0 < s['mem_pct'] < 100 and 0 < s['disk_pct'] <= 100
    assert 0 < s['mem_used_mb'] < psutil.virtual_memory().total / 2**20
    assert abs(s['rss_mb'] - psutil.Process().memory_info().rss / 2**20) < 50
    assert s['temp_c'] is None or -40 < s['temp_c'] < 130

def test_latency_stats_drain_math():
    st = LatencyStats()
    threads = [threading.Thread(target=lambda k=k: [st.record(ms, ok=ms > 10) for ms in range(1 + k, 201, 2)]) for k in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    d = st.drain()
    assert d['requests'] == 200 and d['errors'] == 10 and sorted(d['latencies_ms']) == list(range(1, 201))
    s = latency_summary(d)
    assert s['latency_p50_ms'] == pytest.approx(100.5) and s['latency_p95_ms'] == pytest.approx(190.05)
    assert (s['requests'], s['errors']) == (200, 10)
    assert st.drain() == dict(latencies_ms=[], requests=0, errors=0)  # drained means empty
    st.record(7.0, ok=False)
    assert latency_summary(st.drain()) == dict(latency_p50_ms=7.0, latency_p95_ms=7.0, requests=1, errors=1)
    assert latency_summary(st.drain())['latency_p95_ms'] is None

def test_sampler_writes_rows(store, tmp_path):
    stats = LatencyStats()
    sampler = TelemetrySampler(store, interval_s=0.2, stats=stats, path=tmp_path).start()
    try:
        t_end = time.time() + 1.1
        while time.time() < t_end:
            stats.record(5.0); stats.record(15.0, ok=False); time.sleep(0.01)
    finally: sampler.stop()
    assert not sampler.running and sampler.failures == 0
    tel = store.telemetry()
    assert 3 <= len(tel) <= 7 and len(tel) == sampler.samples
    assert tel.ts.is_monotonic_increasing and tel.ts.diff().dropna().between(0.05, 0.7).all()
    assert (tel.requests >= 2).all() and (tel.errors * 2 == tel.requests).all()
    assert tel.latency_p50_ms.between(5, 15).all() and (tel.latency_p95_ms > 14).all()
    assert tel.cpu_pct.between(0, 100).all() and tel.mem_pct.between(0, 100).all() and (tel.rss_mb > 10).all()
    assert store.telemetry(tel.ts.iloc[1], tel.ts.iloc[-1]).shape[0] == len(tel) - 2

def test_sampler_survives_a_failing_store(store, tmp_path, caplog):
    store.close()  # every write now fails
    sampler = TelemetrySampler(store, interval_s=0.1, path=tmp_path).start()
    time.sleep(0.45)
    assert sampler.running and sampler.failures >= 2 and sampler.samples == 0
    sampler.stop()
    assert 'telemetry sample failed' in caplog.text
    with pytest.raises(TypeError): TelemetrySampler(store, stats=object())
    with pytest.raises(ValueError): TelemetrySampler(store, interval_s=0)
