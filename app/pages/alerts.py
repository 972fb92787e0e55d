"Alerts: filter, acknowledge, resolve, and act (retrain, roll back) with the link alert -> action -> version recorded."
import pandas as pd
import streamlit as st
import appkit as k
from parkml.alerts import handle_alert, SEVERITIES, STATES
from parkml.retraining import start_retrain_job
from parkml.governance import check_role, Refused
from parkml.appviews import rollback_for_alert

st.title('Alerts')
me = k.actor()
c1, c2 = st.columns(2)
state = c1.multiselect('State', STATES, default=['open', 'acknowledged'], key='alerts-state')
sev = c2.multiselect('Severity', SEVERITIES, default=list(SEVERITIES), key='alerts-severity')
a = k.alerts(tuple(state) or None, tuple(sev) or None)
st.dataframe(a.assign(created=lambda d: pd.to_datetime(d.created, unit='s', utc=True)), hide_index=True)
acts = k.alert_actions()
if len(acts):
    st.markdown('**Actions taken**')
    st.dataframe(acts, hide_index=True)
if not len(a):
    st.stop()
by_id = a.set_index('id')
aid = st.selectbox('Alert', a.id.tolist(), key='alerts-id',
                   format_func=lambda i: f"{i}  {by_id.loc[i, 'rule']}  ({by_id.loc[i, 'state']})")
row = by_id.loc[aid]
st.info(f"[{row.severity}] {row.rule}: {row.message}  - suggested action: {row.action}")
try:
    check_role(me, 'alert_handled')
    allowed = True
except PermissionError as e:
    st.caption(str(e))
    allowed = False
if allowed:
    note = st.text_input('Note', key='alerts-note')
    b1, b2, b3, b4 = st.columns(4)

    def done(msg):
        k.refresh()
        st.success(msg)
    try:
        if b1.button('Acknowledge', key='alerts-ack'):
            handle_alert(aid, 'acknowledged', me, note or None, k.cfg())
            done(f"alert {aid} acknowledged by {me.name}")
        if b2.button('Resolve', key='alerts-resolve'):
            handle_alert(aid, 'resolved', me, note or None, k.cfg())
            done(f"alert {aid} resolved by {me.name}")
        if b3.button('Retrain now', key='alerts-retrain'):
            job = start_retrain_job(note or f"alert {aid}: {row.message}", aid, me, cfg=k.cfg())
            done(f"retraining started for alert {aid} as process {job['pid']}: it records its request in the audit "
                 f"log and its progress under Actions taken, then stages the new version; log {job['log']}")
        if b4.button('Roll back', key='alerts-rollback'):
            r = rollback_for_alert(aid, me, note or None, k.cfg())
            done(f"rolled back: champion -> version {r['to_version']} (action {r['action']})")
    except (Refused, PermissionError, ValueError, KeyError) as e:
        st.error(f"refused: {e}")
