"Overview: champion, challenger and previous versions and since when; edge services; today's numbers; open alerts."
import pandas as pd
import streamlit as st
import appkit as k

st.title('Overview')
st.subheader('Versions in play')
st.dataframe(k.aliases_since(), hide_index=True)
t = k.today()
st.subheader(f"Today ({t['day']})")
c1, c2, c3, c4 = st.columns(4)
c1.metric('answered frames', t['answered'])
c2.metric('refused inputs', t['rejected'])
interval = None if t['accuracy'] is None else (
    f"95% interval {t['accuracy_lo']:.3f} to {t['accuracy_hi']:.3f} on {t['n_labels']} labels")
c3.metric('labelled accuracy', '-' if t['accuracy'] is None else f"{t['accuracy']:.3f}", help=interval)
c4.metric('estimated accuracy (no labels)', '-' if t['estimate'] is None else f"{t['estimate']:.3f}",
          help=f"from the daily analysis of {t['estimate_day']}" if t['estimate_day'] else 'no daily analysis yet')
st.subheader('Edge services')
h = k.service_health()
state = 'healthy' if h['ok'] else 'not answering'
(st.success if h['ok'] else st.warning)(f"{h['url']}: {state} ({h['status'] or h['body']})")
if len(t['hosts']): st.dataframe(t['hosts'], hide_index=True)
else: st.caption('no telemetry in the last 24 hours')
st.subheader('Open alerts')
a = k.alerts(state='open')
if len(a):
    st.dataframe(a.groupby('severity').size().rename('open alerts').reset_index(), hide_index=True)
    st.dataframe(a[['created', 'severity', 'rule', 'camera', 'model_version', 'message']].assign(
        created=lambda d: pd.to_datetime(d.created, unit='s', utc=True)), hide_index=True)
else: st.success('no open alerts')
