"""Actions: what an operator or the schedule asks for, each run as one recorded run.

The CLI and the daemon call only actions. An action resolves its configuration, calls the
engines (``backup``, ``restore``, ``retention``, ``archive``), and runs inside
``recorded_run``, which writes history, calls webhooks, updates metrics and logs the run's
one summary line. Engines never import ``history``, ``monitoring``, ``actions``,
``scheduling`` or ``cli``.
"""
