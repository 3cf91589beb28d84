-- Version 2: every membership record carries the nonce of the store handle that registered it
-- (32 lowercase hex digits, compared byte for byte).
--
-- A register replaces a record only when it carries the registering handle's nonce or has
-- expired by the server's clock, and a heartbeat extends only a record carrying its handle's
-- nonce, so two processes started with one worker id are told apart (WorkerIdInUse). Rows
-- written before this version carry '', no handle's nonce: they are taken over once expired.
-- MySQL has no `ADD COLUMN IF NOT EXISTS`: a column already there (an interrupted earlier run)
-- is reported as a schema mismatch naming this migration.

ALTER TABLE {workers} ADD COLUMN instance VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '';
