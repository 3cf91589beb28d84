-- Version 2: leave half of every lease-table page free.
--
-- A renewal (and most other writes) changes no indexed column, so with free space on the row's
-- own page PostgreSQL writes the new row version there as a heap-only tuple (HOT): no index
-- entry, and the old version is pruned from the page without a vacuum. On full pages (the
-- default fillfactor of 100) every update moves the row to another page and adds a primary-key
-- entry, which made a 10,000-lease renewal about twice as slow and bloated table and index.
--
-- Pages written from now on honour the setting; existing pages fill up as their rows move. A
-- `VACUUM FULL` of the table (outside this migration: it locks the table) applies it at once.

ALTER TABLE {leases} SET (fillfactor = 50);
