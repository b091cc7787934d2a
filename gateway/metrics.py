"""Prometheus metrics, all named ``gateway_*`` with help text, in one registry served on the metrics listener.

Adapters and loop phases import the metric they update from here; nothing else defines metrics, so the set stays
documented in one place (the README's metrics table is generated from this registry).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Southbound
POLL_DURATION = Histogram(
    "gateway_poll_duration_seconds",
    "Duration of one poll of a device (all its planned requests).",
    ["device"],
    buckets=_FAST,
    registry=REGISTRY,
)
DEVICE_REQUESTS = Counter(
    "gateway_device_requests_total",
    "Requests sent to a device (reads and writes).",
    ["device", "op"],
    registry=REGISTRY,
)
DEVICE_ERRORS = Counter(
    "gateway_device_errors_total",
    "Failed device requests by kind (timeout, connection, busy, exception, protocol: an answer that did not match its "
    "request, security, unexpected; on a Modbus RTU line also crc: an answer the line corrupted, silent: a unit that "
    "sent nothing, while timeout there is an answer begun but not finished).",
    ["device", "kind"],
    registry=REGISTRY,
)
READINGS = Counter(
    "gateway_readings_total",
    "Readings taken, by device and quality.",
    ["device", "quality"],
    registry=REGISTRY,
)
READINGS_SUPPRESSED = Counter(
    "gateway_readings_suppressed_total",
    "Readings taken but not stored nor sent, by device: report by exception held them back (within their "
    "deadband, no change of quality). The control loop saw every one.",
    ["device"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "gateway_breaker_state",
    "Circuit breaker of a Modbus device: 0 closed, 1 half-open, 2 open. An OPC UA device has none: after "
    "breaker.fail_max failed reads in a row it drops its session and reconnects with back-off "
    "(gateway_device_connected shows it).",
    ["device"],
    registry=REGISTRY,
)
DEVICE_CONNECTED = Gauge(
    "gateway_device_connected",
    "1 while the device answers, 0 otherwise.",
    ["device"],
    registry=REGISTRY,
)
POLL_SLOTS_MISSED = Counter(
    "gateway_poll_slots_missed_total",
    "Poll slots skipped because the previous poll overran (on a shared Modbus RTU line: or waited for the line).",
    ["device"],
    registry=REGISTRY,
)
LINE_BUSY = Counter(
    "gateway_line_busy_seconds_total",
    "Time a Modbus RTU line (serial port, or RTU-over-TCP host:port) was held by a request and its answer; its rate "
    "is the line's measured load (check-config estimates it from the read plan).",
    ["line"],
    registry=REGISTRY,
)

# Loop
LOOP_CYCLE = Histogram(
    "gateway_loop_cycle_seconds",
    "Duration of one Analyze/Plan/Execute cycle.",
    buckets=_FAST,
    registry=REGISTRY,
)
LOOP_LAST_CYCLE = Gauge(
    "gateway_loop_last_cycle_timestamp_seconds",
    "When the loop last completed a cycle (POSIX time).",
    registry=REGISTRY,
)
SYMPTOMS_RAISED = Counter(
    "gateway_symptoms_raised_total",
    "Symptoms raised, by code.",
    ["code"],
    registry=REGISTRY,
)
SYMPTOMS_OPEN = Gauge("gateway_symptoms_open", "Symptoms currently open, by code.", ["code"], registry=REGISTRY)
PLANS_CHOSEN = Counter("gateway_plans_chosen_total", "Plans chosen, by business code.", ["code"], registry=REGISTRY)
COMMANDS = Counter(
    "gateway_commands_total",
    "Commands by outcome: sent, confirmed, failed, blocked.",
    ["status"],
    registry=REGISTRY,
)
SENSE_TO_ACTUATE = Histogram(
    "gateway_sense_to_actuate_seconds",
    "From the poll that delivered the tank level a pump command was decided on to the command's confirmation.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
INTERLOCK_BLOCKS = Counter(
    "gateway_interlock_blocks_total",
    "Commands refused by the safety envelope, by rule.",
    ["rule"],
    registry=REGISTRY,
)

# Store
STORE_WRITE = Histogram(
    "gateway_store_write_seconds",
    "Duration of one batch commit of the knowledge store.",
    buckets=_FAST,
    registry=REGISTRY,
)
STORE_ROWS = Counter(
    "gateway_store_rows_written_total",
    "Rows committed to the knowledge store, by table.",
    ["table"],
    registry=REGISTRY,
)
STORE_ROWS_DROPPED = Counter(
    "gateway_store_rows_dropped_total",
    "Rows the store refused because its queue was full (store unavailable or too slow), by table; "
    "every drop is also an event.",
    ["table"],
    registry=REGISTRY,
)
STORE_HEALTHY = Gauge("gateway_store_healthy", "1 while the store commits, 0 after a failed write.", registry=REGISTRY)
STORE_DISK_BUDGET = Gauge(
    "gateway_store_disk_budget_bytes",
    "The database's disk budget (store.max_disk_mb, or derived from the free space at start).",
    registry=REGISTRY,
)
STORE_DISK_USED_RATIO = Gauge(
    "gateway_store_disk_budget_used_ratio",
    "Share of the disk budget the database takes (pages in use and WAL); alarm from 0.8, history shortened above 0.95.",
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge("gateway_outbox_depth", "Messages in the outbox not yet acknowledged.", registry=REGISTRY)
OUTBOX_OLDEST_AGE = Gauge(
    "gateway_outbox_oldest_age_seconds",
    "Age of the oldest unacknowledged outbox message.",
    registry=REGISTRY,
)

# Uplink
UPLINK_CONNECTED = Gauge(
    "gateway_uplink_connected",
    "1 while connected to the MQTT broker; 0 as soon as the connection is lost or declared dead (nothing heard "
    "while an answer was owed for ack_timeout_s).",
    registry=REGISTRY,
)
UPLINK_UNACKED_OLDEST = Gauge(
    "gateway_uplink_unacked_oldest_seconds",
    "Age of the oldest publish on the current connection still waiting for its PUBACK (0 when none).",
    registry=REGISTRY,
)
UPLINK_DISCONNECTS = Counter(
    "gateway_uplink_disconnects_total",
    "MQTT connections ended, by cause: silent, taken_over, dropped, closed_by_broker, keepalive, local.",
    ["cause"],
    registry=REGISTRY,
)
UPLINK_SESSION_TAKEOVERS = Counter(
    "gateway_uplink_session_takeovers_total",
    "Sessions taken over by another client with this gateway's client id (another gateway with the same gateway_id).",
    registry=REGISTRY,
)
MESSAGES_PUBLISHED = Counter(
    "gateway_messages_published_total",
    "Messages acknowledged by the broker, by kind.",
    ["kind"],
    registry=REGISTRY,
)
MESSAGES_DROPPED = Counter(
    "gateway_messages_dropped_total",
    "Messages dropped (outbox limit), by kind; every drop is also an event.",
    ["kind"],
    registry=REGISTRY,
)
REMOTE_REQUESTS = Counter(
    "gateway_remote_requests_total",
    "Remote requests received, by verdict.",
    ["verdict"],
    registry=REGISTRY,
)

SPARKPLUG_ONLINE = Gauge(
    "gateway_sparkplug_online",
    "1 while the Sparkplug node is born (NBIRTH sent on a live session), 0 while it is disconnected or waits for its "
    "primary host.",
    registry=REGISTRY,
)
SPARKPLUG_HOST_ONLINE = Gauge(
    "gateway_sparkplug_host_online",
    "1 while the primary host's STATE says online (1 without a primary host once connected).",
    registry=REGISTRY,
)
SPARKPLUG_MESSAGES = Counter(
    "gateway_sparkplug_messages_total",
    "Sparkplug messages published, by type (NBIRTH, DBIRTH, DDATA, NDATA, DDEATH, NDEATH).",
    ["type"],
    registry=REGISTRY,
)

# Supervision
TASK_RESTARTS = Counter(
    "gateway_task_restarts_total",
    "Restarts of a supervised task after it ended unexpectedly, by task (see README, Supervision).",
    ["task"],
    registry=REGISTRY,
)
TASK_UP = Gauge(
    "gateway_task_up",
    "1 while a supervised task runs, 0 while it waits to be restarted or has failed, by task (no series once it "
    "ended normally).",
    ["task"],
    registry=REGISTRY,
)
