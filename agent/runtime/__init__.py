"""The agent's runtime in parts: build (config → components), scheduler (per-bus polls),
ingest (health → rules → telemetry → store), alarms, incidents (the incident recorder's
windows), shelving (the console's shelved alarms), sink (appends), actions (commands and the one
acknowledgement path), forwarding (store → uplink), watchdog, meta, and the run that ties them
in one TaskGroup.

Per poll of a device::

    driver.poll() → SampleBatch → RuleEngine.evaluate() → [AlarmEvent]
        → alarm records, then telemetry records → Store.append()     (durability point)
    forwarder: Store.lease() → Uplink.publish(QoS 1) → PUBACK → Store.settle()
"""

from agent.runtime.build import Components, build
from agent.runtime.run import Runtime
from agent.runtime.stats import RuntimeStats

__all__ = ["Components", "Runtime", "RuntimeStats", "build"]
