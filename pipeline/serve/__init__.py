"""The champion for its users: ``predict`` on pictures (``images`` and ``normalise``
bring them to MNIST's form), ``export`` for TF Serving, the GTO ``registry``, the
picture sets (``pictures``; ``rendered`` and ``strokes`` make the one that is not
MNIST; ``picture_report`` scores them) and ``champion`` (which model is published).

Console scripts: ``rnn-predict``, ``rnn-pictures``, ``rnn-registry``.

May import: evaluation, rnn, runtime, data, config.
"""
