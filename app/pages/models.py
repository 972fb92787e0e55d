"Models: every registered version; a version's page: staging report, lineage, comparison with the champion."
import json
import pandas as pd
import streamlit as st
import appkit as k
from parkml.tracking import format_lineage

st.title('Models')
vs = k.versions()
if not len(vs):
    st.info('no version registered yet: run `parkml train`')
    st.stop()
st.dataframe(vs[['version', 'aliases', 'validation', 'approval', 'approved_by', 'created', 'reasons']], hide_index=True)
pick = st.query_params.get('version')
opts = vs.version.astype(str).tolist()
v = st.selectbox('Version', opts, index=opts.index(pick) if pick in opts else 0, key='models-version')
st.query_params['version'] = v
d = k.version_facts(v)
lin, stg = d['lineage'], d['staging']
st.header(f"Version {v}" + (f"  ({', '.join(lin['aliases'])})" if lin['aliases'] else ''))
tab_s, tab_l, tab_c, tab_p = st.tabs(['Staging report', 'Lineage', 'Against the champion', 'Production'])
with tab_s:
    if not stg.get('run_id'): st.warning(f"not staged (validation_status {stg['status']!r}): run `parkml stage {v}`")
    else:
        reasons = f" - {stg['reasons']}" if stg['reasons'] else ''
        say = st.success if stg["status"] == "passed" else st.error
        say(f"staging {stg['status']}: run {stg['run_id']}{reasons}")
        s = stg.get('summary') or {}
        if s.get('gates'):
            st.markdown('**Gates** (measured value against threshold)')
            gates = s['gates'] if isinstance(s['gates'], list) else [s['gates']]
            st.dataframe(pd.DataFrame(gates), hide_index=True)
        if stg.get('metrics'):
            st.markdown('**Metrics**')
            st.dataframe(pd.DataFrame(sorted(stg['metrics'].items()), columns=['metric', 'value']), hide_index=True)
        if s.get('robustness'):
            st.markdown('**Robustness**')
            st.dataframe(pd.DataFrame(s['robustness']), hide_index=True)
        for key in ('recall_gap_sentence', 'dusk_sentence'):
            if s.get(key): st.markdown(f"**Fairness:** {s[key]}")
        if isinstance(s.get('fairness'), list) and s['fairness']:
            st.dataframe(pd.DataFrame(s['fairness']), hide_index=True)
        if s.get('worst_errors'):
            st.markdown('**Worst errors**')
            st.dataframe(pd.DataFrame(s['worst_errors']), hide_index=True)
        for name, png in stg.get('pngs', {}).items(): k.show_png(name, png)
    st.markdown('**Training run plots**')
    for name, png in d['train_pngs'].items(): k.show_png(name, png)
with tab_l:
    st.code(format_lineage(lin), language=None)
with tab_c:
    champ = vs[vs.aliases.str.split(', ').map(lambda a: 'champion' in a)]
    if not len(champ): st.info('no champion yet')
    else:
        cv = str(champ.version.iloc[0])
        c = k.version_facts(cv)
        keys = sorted(set(lin['metrics']) | set(c['lineage']['metrics']))
        cmp = pd.DataFrame({'metric': keys, f"v{v}": [lin['metrics'].get(m) for m in keys],
                            f"champion v{cv}": [c['lineage']['metrics'].get(m) for m in keys]})
        st.dataframe(cmp[~cmp.metric.str.startswith('time_')], hide_index=True)
with tab_p:
    p = d['production']
    if p['since'] is None: st.info('never released')
    else:
        st.write(f"released {p['since']}: {p['n']} answered frames, {p['n_labels']} labelled")
        if p['by_day'] is not None: st.dataframe(p['by_day'], hide_index=True)
        if p['figure']: k.show_png('production', p['figure'])
