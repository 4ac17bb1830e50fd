"""The comparison layer: run records into per-study tables, figures, and the survey's Tables II-IV with verdicts.

collect (records, studies, arms, identical conditions) -> tables (mean ± std, Welch's test) and survey (the survey's
rows and claims) -> build (one Report) -> render (Markdown, CSV, one HTML page) ; cli is ``rnnlab-report``.
"""
