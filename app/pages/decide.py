"Decide: QA approves or rejects a staged version; the owner releases, rolls back or asks for a retraining."
import streamlit as st
import appkit as k
from parkml.governance import ROLES, NEEDS, plan_action, govern, Refused

st.title('Decide')
me = k.actor()
mine = [a for a in ('approve', 'reject', 'release', 'rollback', 'retrain_requested') if NEEDS[a] in ROLES[me.role]]
if not mine:
    st.info(f"{me.name} has role {me.role!r}, which may only read: approving and rejecting is for qa, releasing, "
            "rolling back and retraining for owner.")
    st.stop()
vs = k.versions()
action = st.radio('Action', mine, horizontal=True, key='decide-action')
version = None
if action in ('approve', 'reject', 'release'):
    if not len(vs):
        st.info('no version registered yet')
        st.stop()
    version = st.selectbox('Version', vs.version.astype(str).tolist(), key='decide-version')
required = action in ('reject', 'rollback', 'retrain_requested')
note = st.text_area('Note' + (' (required)' if required else ''), key='decide-note')
try:
    plan = plan_action(action, version, me, note, cfg=k.cfg())
except Exception as e:
    st.error(str(e))
    st.stop()
st.markdown('**What will happen**')
st.code(plan.explain(), language=None)
if not plan.allowed:
    why = ([plan.role_refusal()] if plan.role_refusal() else []) + plan.refusals
    st.warning('The rules refuse this now: ' + '; '.join(why))
if st.button(f"Carry out: {action}", type='primary', key='decide-go'):
    try: recs = govern(plan, k.cfg())
    except (Refused, PermissionError) as e: st.error(f"refused: {e}")
    else:
        k.refresh()
        st.success(f"done: {action} recorded by {me.name} (audit records {', '.join(str(r['id']) for r in recs)})")
