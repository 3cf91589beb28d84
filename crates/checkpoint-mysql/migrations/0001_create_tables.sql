-- Version 1: the lease table and the membership table.
--
-- {leases} and {workers} are replaced by the backquoted table names of the store's
-- configuration (validated identifiers only). Statements are separated by a `;` at the end of a
-- line; MySQL commits each DDL statement on its own, so every statement is safe to run again.
--
-- App, stream and shard ids (ASCII letters, digits, `-`, `_`, `.` by the contract's identifier
-- rule) are utf8mb4 with the binary collation `utf8mb4_bin`, so they compare and sort byte for
-- byte. Worker ids (`owner`, `claim`, `worker`) are VARBINARY: `utf8mb4_bin` is a PAD SPACE
-- collation on MariaDB and on MySQL 8 alike, under which `w` and `w ` would be one worker;
-- bytes compare exactly. Sequence numbers are ordered through `checkpoint_order`: a rank digit,
-- then the sequence number left-padded to 128 digits and the sub-sequence to 20, so byte order
-- is progress order. `create_nonce` is the random number of the `create_lease_if_absent` call
-- that inserted the row, so a retry after a lost reply knows whether it created the record.

CREATE TABLE IF NOT EXISTS {leases} (
    app                    VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    stream                 VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    shard                  VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    owner                  VARBINARY(256) NULL,
    token                  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    deadline               DATETIME(6) NULL,
    checkpoint             VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    checkpoint_sub         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    checkpoint_order       VARCHAR(150) CHARACTER SET ascii COLLATE ascii_bin AS (
        CASE
            WHEN checkpoint IS NULL THEN NULL
            WHEN checkpoint = 'SHARD_END' THEN '2'
            WHEN checkpoint REGEXP '^[0-9]{1,128}$'
                THEN CONCAT('1', LPAD(checkpoint, 128, '0'), LPAD(checkpoint_sub, 20, '0'))
            ELSE '0'
        END
    ) STORED,
    pending_checkpoint     VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    pending_checkpoint_sub BIGINT UNSIGNED NOT NULL DEFAULT 0,
    parents                TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    claim                  VARBINARY(256) NULL,
    owner_switches         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    create_nonce           BIGINT UNSIGNED NULL,
    PRIMARY KEY (app, stream, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {workers} (
    app        VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    worker     VARBINARY(256) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    PRIMARY KEY (app, worker)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
