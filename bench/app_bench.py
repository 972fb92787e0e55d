"""Governance app page timings: every page opened through Streamlit's AppTest on an existing store, cold (empty
cache) and warm (cached queries), as the signed-in owner.

    .venv/bin/python bench/app_bench.py [--runs RUNS] [--rounds 3]

RUNS defaults to the configured runs folder (e.g. the one the week-in-the-park run leaves). A throw-away user is
made in a temporary users file, so the store's own users file is not touched. Target: each page under 2 s warm.
"""
import argparse, os, statistics, tempfile, time
from pathlib import Path

APP = Path(__file__).resolve().parents[1]/'app'
PAGES = ['overview', 'models', 'decide', 'monitoring', 'alerts', 'audit']

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', default=None); ap.add_argument('--rounds', type=int, default=3)
    a = ap.parse_args()
    if a.runs: os.environ['PARKML_RUNS'] = str(Path(a.runs).resolve())
    os.environ['PARKML_USERS_FILE'] = str(Path(tempfile.mkdtemp())/'users.yaml')
    from parkml.users import add_user
    add_user('bench-owner', 'owner', 'bench-owner-pw')
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(APP/'Home.py'), default_timeout=300); at.run()
    at.text_input[0].input('bench-owner'); at.text_input[1].input('bench-owner-pw'); at.button[0].click(); at.run()
    assert at.session_state['authentication_status'], 'sign-in failed'
    print(f"store: {os.environ.get('PARKML_RUNS', 'configured runs folder')}")
    times = {p: [] for p in PAGES}
    for r in range(a.rounds):
        if r == 0: st.cache_data.clear()
        for p in PAGES:
            t0 = time.perf_counter(); at.switch_page(str(APP/'pages'/f"{p}.py")); at.run()
            times[p].append(time.perf_counter() - t0)
            if at.exception: print(f"  {p}: EXCEPTION {at.exception[0].value}")
            if r == 0: print(f"  {p}: {' | '.join(str(x.value)[:60] for x in [*at.title, *at.metric, *at.info, *at.error][:6])}")
    for p, ts in times.items():
        print(f"{p:12s} cold {ts[0]:6.2f} s   warm median {statistics.median(ts[1:] or ts):6.2f} s")

if __name__ == '__main__': main()
