-- farego ledger schema, version 35: the console's records kept aside
-- (Aside: GET /console/aside) newest first, a page at a time. Without a
-- reason, the newest held taps or quarantined records were read by
-- received_ns alone, which no index had: both backends read and sorted
-- every record of the table for each page (a keyring restored from an
-- older backup holds every tap of the fleet until the key is back). With a
-- reason, held_taps_reason gave the time order but not the order of
-- records received in one transaction (one received_ns), which a page
-- boundary needs. These give both orders as one range, ties broken by the
-- primary key. Re-runnable (IF NOT EXISTS).
--
-- On a large existing ledger the first start after this migration builds
-- them: it reads held_taps and quarantine once (both are normally small).
CREATE INDEX IF NOT EXISTS held_taps_received ON held_taps (received_ns, device_id, epoch, seq);
CREATE INDEX IF NOT EXISTS held_taps_reason_received ON held_taps (reason, received_ns, device_id, epoch, seq);
CREATE INDEX IF NOT EXISTS quarantine_received ON quarantine (received_ns, device_id, epoch, seq);
CREATE INDEX IF NOT EXISTS quarantine_reason_received ON quarantine (reason, received_ns, device_id, epoch, seq);
