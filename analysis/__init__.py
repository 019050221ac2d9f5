"""Tables and plots of SEAL ablation sweeps, computed from the results DataFrame alone (docs/results_schema.md).

    ablations.py   which rows form each study (activation, safe-set size, penalty, algorithm, main table)
    stats.py       mean with Student-t CI over seeds, paired t-test against the reference cell
    tables.py      DataFrame -> table model (table_model.py); resource tables per stage
    render.py      table model -> markdown, LaTeX (booktabs), CSV
    plots.py       table model -> PNG bars; selector-weight histograms (selector_weights.py reads the files)
    paper.py       main table beside the paper's Llama-3 numbers
    report.py      write_report(frame, out_dir), render_tables_markdown(frame)
    synthetic.py   hand-built results rows, for tests and for trying the report without a sweep

Nothing here imports Ray or seal_ray: a results DataFrame read on a laptop is enough.
"""
