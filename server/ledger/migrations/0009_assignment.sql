-- farego ledger schema, version 9: the route and vehicle the operator
-- assigned each device (PUT /v1/devices/{id}/assignment), numbered per
-- device. The newest assignment at or before a tap's time is the one the
-- tap's route is compared with (a different route is noted
-- route_mismatch). At most the newest 100 per device are kept.
CREATE TABLE device_assignments (
    device_id TEXT NOT NULL,
    version   BIGINT NOT NULL,
    route     TEXT NOT NULL,
    vehicle   TEXT NOT NULL,
    at_ns     BIGINT NOT NULL,
    by_who    TEXT NOT NULL,
    PRIMARY KEY (device_id, version)
);
