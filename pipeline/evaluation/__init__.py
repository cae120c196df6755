"""How good a model is and how sure we are: exact tests (``stats``) and evaluate's report.

``stats`` holds the exact binomial and McNemar tests and Clopper-Pearson
intervals that the report, the champion decision and the PR diff all use;
``report`` writes evaluate's Markdown, figures and model card.

May import: rnn, runtime, data, config (in practice only config).
"""
