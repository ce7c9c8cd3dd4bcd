"""The installer's side: commissioning tools, and the practice site they are tried on.

Today it holds the practice site: the tank-farm simulator (:mod:`provisioning.simulator`,
:mod:`provisioning.simulator_serial`, ``safeedge simulate``), a throw-away local Mosquitto
(:mod:`provisioning.localbroker`) and the end-to-end demo (``safeedge demo``). The central
platform's tools live in :mod:`central`; the demo embeds its listener, which is why
``provisioning`` sits above ``central`` in the import layers.
"""
