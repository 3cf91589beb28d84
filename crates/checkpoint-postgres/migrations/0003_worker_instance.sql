-- Version 3: every membership record carries the nonce of the store handle that registered it.
--
-- A register replaces a record only when it carries the registering handle's nonce or has
-- expired by the server's clock, and a heartbeat extends only a record carrying its handle's
-- nonce, so two processes started with one worker id are told apart (WorkerIdInUse). Rows
-- written before this version carry '', no handle's nonce: they are taken over once expired.

ALTER TABLE {workers} ADD COLUMN IF NOT EXISTS instance text COLLATE "C" NOT NULL DEFAULT '';
