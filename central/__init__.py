"""The central platform's side of the wire contract, in small (design/DESIGN.md, UPLINK.md).

- :mod:`central.listen` (``safeedge listen``): subscribe to gateways' uplinks over MQTT;
  :mod:`central.inbox` decodes, de-duplicates, finds gaps and checks the schemas without I/O;
- :mod:`central.seqtrack`: per-(site, gateway, stream) seq gaps, late fills and duplicates;
- :mod:`central.schema`: JSON Schema validation of received payloads (needs ``jsonschema``);
- :mod:`central.cmd_sign` (``safeedge sign-command``): the platform's Ed25519 command keys and
  signed downlink commands.

Layers (import-linter, pyproject.toml): ``provisioning`` > ``central`` > ``agent`` > leaves.
``central`` uses only the agent's wire codec, command signing and TLS config; it never needs
the installer's tools, while the installer's practice site (``provisioning.demo``) plays the
platform by embedding the :class:`central.listen.Listener`, so provisioning sits above it.
The agent never imports ``central``.
"""
