-- Device records that could not be read as taps, kept for investigation.
CREATE TABLE quarantine (
    device_id   TEXT NOT NULL,
    epoch       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    record      BYTEA NOT NULL,
    received_ns BIGINT NOT NULL,
    PRIMARY KEY (device_id, epoch, seq)
);
