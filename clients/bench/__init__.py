"""``rejoinder bench``: the latency benchmark of ../shared/LATENCY.md.

The data path of one run::

    testset (cached speech + ground truth) -> runner (client process, real-time
    paced sessions) -> server (spawned or external) -> runner -> metrics -> report

- :mod:`clients.bench.testset`: deterministic cases (normal, pause, barge-in,
  noisy) with ground truth, cached under ``data/bench/``.
- :mod:`clients.bench.runner`: the client process; N concurrent sessions of
  :class:`clients.client.RejoinderClient` (or the Realtime adapter), one
  :class:`~clients.bench.metrics.TurnRecord` per turn.
- :mod:`clients.bench.metrics`: pure arithmetic on turn records.
- :mod:`clients.bench.server_process`: spawn or reach the server, sample its CPU and RSS.
- :mod:`clients.bench.report`: stdout table, JSON, Markdown and PNG plots.
- :mod:`clients.bench.cli`: ``main(argv)``, wired as ``rejoinder bench``.
"""
