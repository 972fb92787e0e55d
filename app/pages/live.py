"""Live: what the sentry (`parkml sentry`) sees now, per camera: the last frames, integrity and drift, the latency and
temperature of the last hour, and the open real-time alerts. Refreshes itself every `app_live_refresh_s` seconds."""
import time
import pandas as pd
import streamlit as st
import appkit as k

st.title('Live')
c = k.cfg()

@st.cache_data(ttl=5, show_spinner=False)
def status():
    from parkml.sentry_run import sentry_status
    return sentry_status(c)

@st.cache_data(ttl=5, show_spinner=False)
def last_frames(camera: str, n: int = 6) -> list:
    "(caption, bytes) of the camera's newest stored frames"
    from parkml.predlog import open_store
    with open_store(c.predlog_uri, c.frames_dir) as s:
        rows = s.predictions(camera=camera, newest_first=True, limit=n)
        return [(f"{pd.Timestamp(r.ts, unit='s', tz='UTC'):%H:%M:%S} {r.label or r.status}", s.get_frame(r.frame_sha))
                for r in rows.itertuples() if r.frame_sha]

@st.cache_data(ttl=5, show_spinner=False)
def last_hour() -> pd.DataFrame:
    from parkml.predlog import open_store
    with open_store(c.predlog_uri, c.frames_dir) as s: t = s.telemetry(time.time() - 3600)
    return t.assign(time=pd.to_datetime(t.ts, unit='s', utc=True)).set_index('time')

@st.cache_data(ttl=5, show_spinner=False)
def open_alerts() -> pd.DataFrame:
    a = k.alerts(('open', 'acknowledged'))
    return a[a.rule.str.startswith('sentry_')]

def thumbnails(camera: str):
    shots = [(cap, b) for cap, b in last_frames(camera) if b]
    if not shots:
        st.caption('no stored frames')
        return
    for col, (cap, b) in zip(st.columns(len(shots)), shots):
        try: col.image(b, caption=cap, width=120)
        except Exception: col.caption(f"{cap}: not an image")

def camera_panel(cam: str, v: dict):
    failing = v['failing']
    last = pd.Timestamp(v['last_ts'], unit='s', tz='UTC')
    st.markdown(f"**{cam}**: {v['frames']} frames, last at {last:%Y-%m-%d %H:%M:%S}; "
                f"integrity {'failing: ' + ', '.join(failing) if failing else 'ok'}; drift "
                f"{'ALARM' if v['drift_alarm'] else 'none'} ({100 * v['drift_share']:.0f}% of the threshold, "
                f"{v['drift_top']})")
    thumbnails(cam)

@st.fragment(run_every=float(c.app_live_refresh_s))
def live():
    s = status()
    if not s:
        st.info(f"the sentry has not run yet: start `parkml sentry` beside the service "
                f"(it keeps its state in {c.sentry_state_dir})")
        return
    age = time.time() - s['saved']
    clock = pd.Timestamp(s['clock'] or 0, unit='s', tz='UTC')
    ref = f"; reference: {s['reference_error']}" if s.get('reference_error') else ''
    st.caption(f"sentry state saved {age:.0f} s ago; clock {clock:%Y-%m-%d %H:%M:%S}; {s['checks']} checks; "
               f"status {s['status']}{ref}")
    if age > 5 * c.sentry_poll_s + 60: st.warning(f"the sentry's state is {age:.0f} s old: is `parkml sentry` running?")
    st.subheader('Open real-time alerts')
    a = open_alerts()
    if len(a): st.dataframe(a.assign(created=lambda d: pd.to_datetime(d.created, unit='s', utc=True)), hide_index=True)
    else: st.caption('none')
    st.subheader('Cameras')
    for cam, v in sorted(s['cameras'].items()): camera_panel(cam, v)
    perf = pd.DataFrame(s['performance']).T
    if len(perf):
        st.subheader('Service')
        st.dataframe(perf, width='content')
    t = last_hour()
    if len(t):
        st.markdown('**Latency p95 (ms), last hour**')
        st.line_chart(t[['latency_p95_ms']])
        if t.temp_c.notna().any():
            st.markdown('**Temperature (°C), last hour**')
            st.line_chart(t[['temp_c']])
        else: st.caption('no temperature sensor on this host')

live()
