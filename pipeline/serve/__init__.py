"""The champion for its users: ``predict`` on pictures, ``export`` for TF Serving,
the GTO ``registry``, the ``pictures`` set, and ``champion`` (which model is published).

Console scripts: ``rnn-predict``, ``rnn-pictures``, ``rnn-registry``.

May import: evaluation, rnn, runtime, data, config.
"""
