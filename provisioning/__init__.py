"""The installer's side: commissioning tools, and the practice site they are tried on.

The installer's kit (docs/commissioning.md): ``safeedge identity``
(:mod:`provisioning.identity`), ``safeedge scan tcp|serial`` (:mod:`provisioning.scan`,
:mod:`provisioning.serial_sweep`), ``safeedge probe`` (:mod:`provisioning.probe`) and
``safeedge commission`` (:mod:`provisioning.commission` and its ``commission_*`` modules); the
offline bundle is built by ``systemd/make_bundle.py``.

The practice site: the tank-farm simulator (:mod:`provisioning.simulator`,
:mod:`provisioning.simulator_serial`, ``safeedge simulate``), a throw-away local Mosquitto
(:mod:`provisioning.localbroker`) and the end-to-end demo (``safeedge demo``). The central
platform's tools live in :mod:`central`; the demo embeds its listener, which is why
``provisioning`` sits above ``central`` in the import layers.
"""
