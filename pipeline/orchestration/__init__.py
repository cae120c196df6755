"""What the Airflow DAG's tasks do: each runs one DVC stage in a private workspace
(``orchestrate``, ``workspace``), and ``publish`` replaces the champion and
records the run; ``failures`` sorts what goes wrong for the DAG's retry
policy. Drives DVC and git in subprocesses; imports no TensorFlow (an import
contract), so the DAG parses fast.

May import: stages, serve, evaluation, rnn, runtime, data, config.
"""
