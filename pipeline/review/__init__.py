"""Reading runs side by side: the pull-request report (``diff`` -> ``comparison``
-> ``markdown``, ``evidence`` for which changes are real, ``figures``) and
``seeds`` (N seeds per model as DVC experiments). Console scripts: ``rnn-diff``, ``rnn-seeds``.

May import: everything below it (orchestration, stages, serve, evaluation, rnn,
runtime, data, config).
"""
