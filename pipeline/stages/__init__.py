"""The DVC stages: ``fetch``, ``validate``, ``split``, ``train``, ``evaluate``.

One module per stage, named as its ``dvc.yaml`` stage, its ``params.yaml``
section and its Airflow task id; each has ``run(...)`` (the work, called by
tests) and ``main()`` (``python -m pipeline.stages.<stage>``, what dvc.yaml runs).
Stages talk only through the files DVC tracks, never by importing each other.

May import: serve, evaluation, rnn, runtime, data, config.
"""
