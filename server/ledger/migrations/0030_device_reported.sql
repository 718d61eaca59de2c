-- farego ledger schema, version 30: the route and vehicle a device says
-- (in its status) it records in its taps, whether from its configuration,
-- set at the device, or assigned by the server ('': not reported yet),
-- and the version of the newest assignment from the server it applied
-- (0: none). A fare table that leaves a route out names the devices on it
-- before it puts them out of service (DevicesLeftOut): one that had not
-- tapped yet was not named, since only its taps told its route. A route
-- set at the device after it applied an assignment stands (the device
-- refuses an assignment not newer than it applied): the server's
-- assignment is the route the device records only when it is newer than
-- the version reported. (Not re-runnable: SQLite has no ADD COLUMN IF
-- NOT EXISTS; the tests that make an older ledger drop them.)
ALTER TABLE devices ADD COLUMN reported_route TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN reported_vehicle TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN reported_server_version BIGINT NOT NULL DEFAULT 0;
