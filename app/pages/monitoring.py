"""Monitoring: the daily metrics over time against their thresholds, drift, integrity, telemetry, the dog-cat gap;
any day's report."""
import pandas as pd
import streamlit as st
import appkit as k

st.title('Monitoring')
d = k.daily()
if not len(d):
    st.info('no daily analysis yet: run `parkml analyze DAY`')
    st.stop()
c = k.cfg()
d = d.copy()
if {'label_recall_dog', 'label_recall_cat'} <= set(d.columns):
    d['dog_cat_recall_gap_points'] = 100 * (d.label_recall_dog - d.label_recall_cat)


def chart(title, cols, limit=None, limit_name=None):
    cols = [x for x in cols if x in d.columns]
    if not cols: return
    t = d.set_index('day')[cols]
    if limit is not None: t[limit_name] = limit
    st.markdown(f"**{title}**")
    st.line_chart(t)


chart('Accuracy (labels and label-free estimate)', ['label_accuracy', 'est_accuracy'], c.min_accuracy, 'min_accuracy')
chart('Dog-versus-cat recall gap, points', ['dog_cat_recall_gap_points'], c.recall_gap_max_points, 'max gap')
drift_p = [x for x in d.columns if x.startswith('drift_') and x.endswith('_p_adjusted')]
chart('Drift (1 = drift found)', ['drift'] + drift_p, c.drift_alpha, 'alpha')
chart('Integrity checks failed', ['integrity_failed', 'telemetry_failed'])
chart('Telemetry', [x for x in d.columns if x.startswith('tel_') and ('p95' in x or 'cpu' in x or 'mem' in x)])
chart('Traffic', ['n_answered', 'n_rejected', 'dog_share'])
st.subheader('Daily runs')
shown = [x for x in ('n_answered', 'label_accuracy', 'est_accuracy', 'drift', 'alerts') if x in d]
st.dataframe(d[['day', 'version', 'run_id'] + shown], hide_index=True)
day = st.selectbox('Open the report of a day', d.day.tolist()[::-1], key='monitoring-day')
run = d[d.day == day].run_id.iloc[-1]
from parkml.tracking import mlflow_client
import tempfile
try:
    p = mlflow_client(c).download_artifacts(run, f"report/daily-{day}.html", tempfile.mkdtemp())
    html = open(p, encoding='utf-8').read()
    st.download_button('Download the daily report', html, file_name=f"daily-{day}.html", mime='text/html')
    st.components.v1.html(html, height=900, scrolling=True)
except Exception as e: st.warning(f"the report of {day} cannot be read from run {run}: {e}")
