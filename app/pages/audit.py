"Audit: the audit report of any version (downloadable) and the trace of one prediction."
import json
import streamlit as st
import appkit as k
from parkml.audit import audit_report
from parkml.trace import trace, format_trace, TraceError

st.title('Audit')
tab_r, tab_t = st.tabs(['Audit report', 'Prediction trace'])
with tab_r:
    vs = k.versions()
    if not len(vs): st.info('no version registered yet')
    else:
        v = st.selectbox('Version', vs.version.astype(str).tolist(), key='audit-version')
        log = st.checkbox('log the report to MLflow beside the version', value=True, key='audit-log')
        if st.button('Write the audit report', key='audit-go'):
            with st.spinner('collecting the facts...'): r = audit_report(v, log=log, cfg=k.cfg())
            st.session_state['audit'] = dict(version=v, html=r['html'].read_text(encoding='utf-8'),
                                             md=r['markdown'].read_text(encoding='utf-8'),
                                             run_id=r['run_id'], path=str(r['html']))
            k.refresh()
        rep = st.session_state.get('audit')
        if rep and rep['version'] == v:
            logged = f", logged to MLflow run {rep['run_id']}" if rep['run_id'] else ''
            st.success(f"written to {rep['path']}{logged}")
            c1, c2 = st.columns(2)
            c1.download_button('Download HTML', rep['html'], file_name=f"audit-v{v}.html", mime='text/html',
                               key='audit-dl-html')
            c2.download_button('Download Markdown', rep['md'], file_name=f"audit-v{v}.md", mime='text/markdown',
                               key='audit-dl-md')
            st.components.v1.html(rep['html'], height=900, scrolling=True)
with tab_t:
    pid = st.text_input('Prediction id', key='trace-id').strip()
    if pid:
        try: t = trace(pid, cfg=k.cfg())
        except TraceError as e: st.error(str(e))
        else:
            st.code(format_trace(t), language=None)
            if t['frame']['retained']:
                try: st.image(t['frame']['path'], caption='the frame', width=320)
                except Exception as e:
                    st.caption(f"the frame file {t['frame']['path']} cannot be shown as an image: {type(e).__name__}")
            with st.expander('as JSON'): st.json(json.loads(json.dumps(t, default=str)))
