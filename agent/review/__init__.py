"""``safeedge review``: records for review (评估复盘) read from the local buffer, no uplink.

Modules (each imports only what it needs, so ``safeedge --help`` stays light):

- :mod:`agent.review.config`   ``[review]`` config (language, site time zone, recorder)
- :mod:`agent.review.history`  the only module that reads the buffer (``buffer.StoreReader``)
- :mod:`agent.review.kpi`      alarm-system KPIs (EEMUA 191 / ISA-18.2 / IEC 62682), vectorised
- :mod:`agent.review.recorder` the incident recorder (pre-trigger rings, sealed windows)
- :mod:`agent.review.incident` incidents from the recorder's records, and their report data
- :mod:`agent.review.incident_page` the incident report as HTML / CSV / JSON
- :mod:`agent.review.alarms`   the KPI report as a terminal table and HTML
- :mod:`agent.review.text`     English / Chinese text, site time, the KPI table and benchmarks
- :mod:`agent.review.render`   HTML pages, embedded plots (matplotlib Agg), rich tables
- :mod:`agent.review.tune`     what-if replay of candidate rule parameters
- :mod:`agent.review.export`   tidy CSV / Parquet export
- :mod:`agent.review.cmd`      the command group; :mod:`agent.review.actions` what each does
"""
