"""rnn-mnist: a scheduled, reproducible training pipeline for recurrent MNIST classifiers.

Packages by job, each allowed to import only the ones listed after it
(pyproject.toml's import contracts; tests/test_architecture.py checks them):

- ``review``        the pull-request diff and seed studies: reads runs, trains nothing
- ``orchestration`` what the Airflow DAG's tasks do: one DVC stage per task, publish
- ``stages``        one module per DVC stage (= params.yaml section = Airflow task id)
- ``serve``         the champion for users: predict, export, registry, pictures
- ``evaluation``    exact tests and evaluate's report, figures and model card
- ``rnn``           the four architectures, their fast layers and the C++ op
- ``runtime``       what every stage's ``main()`` shares: one-line failures, records
- ``data``          file formats: IDX and the split's arrays
- ``config``        the only reader of params.yaml

docs/architecture.md has the diagram and where to change what.
"""
