"""Tables and plots of SEAL ablation sweeps, computed from the results DataFrame alone (docs/results_schema.md).

    ablations.py   which rows form each study (activation, safe-set size, penalty, algorithm, main table)
    stats.py       intervals (clustered bootstrap, clipped Student-t, per-seed below 3 seeds), paired tests, Holm, power
    significance.py what a report may claim: Holm over its tests, bold, detectable differences, sentences
    power.py       noise of each study's differences in earlier results (for `seal-ray plan`)
    tables.py      DataFrame (+ per-prompt outcomes) -> table model (table_model.py); resources; hexphi categories
    render.py      table model -> markdown, LaTeX (booktabs), CSV
    plots.py       table model -> PNG bars; selector-weight histograms (selector_weights.py reads the files)
    paper.py       main table beside the paper's Llama-3 numbers
    report.py      write_report(frame, out_dir), render_tables_markdown(frame)
    synthetic.py   hand-built results rows and per-prompt outcomes, for tests and for trying the report

Nothing here imports Ray or seal_ray: a results DataFrame read on a laptop is enough.
"""
