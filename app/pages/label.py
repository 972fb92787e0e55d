"""Label: staff (and owners) say what a frame from the frame store shows, cat, dog, neither (no cat or dog) or unsure,
in the order of the labelling queue (`parkml.label_queue`). Every answer goes through `parkml.labels.add_label`, the
store's `add_feedback` with the signed-in person as its source. Keys: K cat, D dog, N neither, U unsure, S skip,
Z undo (Streamlit's own button shortcuts; C and R are Streamlit's, so cat is K)."""
import pandas as pd
import streamlit as st
import appkit as k
from parkml.labels import (check_labeller, add_label, progress, label_history, answers, agreement_by_person,
                           labels_by_day)
from parkml.label_queue import next_frames, queue_reference
from parkml.predlog import open_store

KEYS = dict(cat='K', dog='D', neither='N', unsure='U', skip='S', undo='Z')

st.title('Label')
me, c = k.actor(), k.cfg()
try: check_labeller(me)
except PermissionError as e:
    st.info(f"{e}: labels feed retraining, so only people with a labelling role give them.")
    st.stop()
ss = st.session_state
ss.setdefault('label-skipped', [])
ss.setdefault('label-done', [])   # (prediction id, answer) given in this session, newest last: what undo takes back

@st.cache_data(ttl=600, show_spinner='loading the reference...')
def reference():
    "The champion's reference projections, for the queue's novelty (None without one)"
    return queue_reference(k.cfg())

def store(): return open_store(c.predlog_uri, c.frames_dir)

def answer(pid: str, said: str):
    with store() as s: add_label(s, pid, said, me)
    ss['label-done'].append((pid, said))
    ss.pop('label-again', None)

def skip(pid: str):
    ss['label-skipped'].append(pid)
    ss.pop('label-again', None)

def undo():
    if ss['label-done']: ss['label-again'] = ss['label-done'].pop()

def frame_to_show(s):
    "The prediction to label now and its frame's bytes: the one undo brought back, else the queue's first with a frame"
    if (again := ss.get('label-again')):
        p = s.get_prediction(again[0])
        return dict(p, why=f"undo: you answered {again[1]}; answer again to correct it"), s.get_frame(p['frame_sha'])
    for r in next_frames(s, me.name, 10, reference(), ss['label-skipped'], cfg=c).itertuples():
        data = s.get_frame(r.frame_sha)
        if data: return r._asdict(), data
        ss['label-skipped'].append(r.id)   # the frame is gone (retention): nothing to look at
    return None, None

def buttons(pid: str | None):
    cols = st.columns(6)
    for col, said in zip(cols, ('cat', 'dog', 'neither', 'unsure')):
        col.button(said, key=f"label-{said}", shortcut=KEYS[said], on_click=answer,
                   args=(pid, said), disabled=pid is None, width='stretch', type='primary')
    cols[4].button('skip', key='label-skip', shortcut=KEYS['skip'], on_click=skip, args=(pid,),
                   disabled=pid is None, width='stretch')
    cols[5].button('undo', key='label-undo', shortcut=KEYS['undo'], on_click=undo,
                   disabled=not ss['label-done'], width='stretch')

with store() as s:
    p = progress(s, me.name, c)
    st.progress(min(1.0, p['done'] / max(1, p['goal'])), text=f"{p['done']} of today's {p['goal']} frames labelled")
    rec, data = frame_to_show(s)
    history = label_history(s, rec['id']) if rec else None
if rec is None:
    st.success('Nothing waits for a label in the queue now.')
    buttons(None)
    st.stop()
show_model = st.toggle("show the model's answer", value=bool(c.label_show_model), key='label-show-model')
when = pd.Timestamp(rec['ts'], unit='s', tz='UTC').tz_convert(c.monitor_tz)
model = f"; model: {rec['label']} (P(dog) {rec['p_dog']:.2f})" if show_model else ''
st.markdown(f"**{rec['camera']}**, captured {when:%Y-%m-%d %H:%M:%S %Z}{model}")
st.caption(f"why this frame: {rec['why']}; prediction {rec['id']}")
buttons(rec['id'])
try: st.image(data, width=640)   # small frames are scaled up: a person sees more than a thumbnail
except Exception: st.warning('the stored frame is not an image: skip it')
if len(history):
    st.caption('answers so far: ' + '; '.join(f"{h.person}: {h.answer}" for h in history.itertuples()))
with st.expander('Labels and agreement'), store() as s:
    a = answers(s, pd.Timestamp.now('UTC').timestamp() - float(c.label_window_days) * 86400)
    st.dataframe(agreement_by_person(a), hide_index=True)
    st.dataframe(labels_by_day(a, c), hide_index=True)
