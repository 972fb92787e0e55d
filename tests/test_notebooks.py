"""Warm kernels for sequences of papermill runs: the spare kernel is a real ipykernel that has already imported parkml's
common modules, it is handed out only for the folder and PARKML_* environment it was started for, and none outlives
its block."""
import psutil
from parkml.notebooks import SpareKernel, warm_kernels

def _ask(km, code: str) -> str:
    "Run `code` on the kernel behind `km` and return what it printed"
    kc = km.client(); kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out = []
        reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m['content'].get('text', '')))
        assert reply['content']['status'] == 'ok', reply['content']
        return ''.join(out).strip()
    finally: kc.stop_channels()

def _pid(spare: SpareKernel) -> int: return spare.km.provisioner.pid

def test_spare_kernel_has_the_common_imports_and_not_torch(tmp_path):
    with warm_kernels() as spare:
        spare.fill(tmp_path)
        km = spare.take(tmp_path)
        assert km is not None and spare.km is None
        try:
            got = _ask(km, "import sys, os; print(*[m in sys.modules for m in ('parkml.daily', 'parkml.staging', "
                           "'mlflow.store.tracking.sqlalchemy_store', 'scipy.stats', 'torch')], os.getcwd())")
        finally: km.shutdown_kernel(now=True)
    assert got.split() == ['True', 'True', 'True', 'True', 'False', str(tmp_path)]

def test_spare_kernel_is_only_handed_to_its_folder_and_environment(tmp_path, monkeypatch):
    with warm_kernels() as spare:
        spare.fill(tmp_path); pid = _pid(spare)
        assert spare.take(tmp_path/'other') is None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        spare.fill(tmp_path); pid = _pid(spare)
        monkeypatch.setenv('PARKML_RUNS', str(tmp_path/'elsewhere'))
        assert spare.take(tmp_path) is None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

def test_leaving_the_block_shuts_the_spare_down(tmp_path):
    import parkml.notebooks as nbm
    with warm_kernels() as spare:
        spare.fill(tmp_path); pid = _pid(spare)
        assert psutil.Process(pid).is_running() and nbm.current_spare() is spare
        with warm_kernels() as inner:        # a nested block (retrain inside the week) shares the spare
            assert inner is spare and spare.km is not None
        assert psutil.Process(pid).is_running()
    assert nbm.current_spare() is None and spare.km is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

def test_a_spare_dropped_at_once_leaves_no_heartbeat_and_no_descriptors(tmp_path):
    "A spare filled and dropped at once (a block that ends early) once left a heartbeat thread spinning up sockets"
    import os, threading
    def fds(): return len(os.listdir(f'/proc/{os.getpid()}/fd'))
    before = fds()
    with warm_kernels() as spare:
        for _ in range(3):
            spare.fill(tmp_path)
            assert not [t for t in threading.enumerate() if type(t).__name__ == 'HBChannel']
            spare.drop()
    assert fds() <= before + 10, (before, fds())

def test_kernels_talk_over_unix_sockets_and_print_no_tcp_warning(tmp_path, capfd):
    "The week's output once had ipykernel's 'running over TCP without encryption' several times a day: ipc, no warning"
    from pathlib import Path
    from parkml.notebooks import start_kernel
    with warm_kernels() as spare:
        spare.fill(tmp_path)
        km = spare.take(tmp_path)
        try: assert _ask(km, "print(6 * 7)") == '42'
        finally: km.shutdown_kernel(now=True)
    own = start_kernel(tmp_path)
    try: assert _ask(own, "import os; print(os.getcwd())") == str(tmp_path)
    finally: own.shutdown_kernel(now=True)
    for k in (km, own):
        assert k.transport == 'ipc' and Path(k.ip).is_absolute(), (k.transport, k.ip)
        assert not Path(f"{k.ip}-{k.shell_port}").exists() and not Path(k.connection_file).exists()   # cleaned up
    err = capfd.readouterr().err
    assert 'without encryption' not in err and 'Traceback' not in err, err[-2000:]
