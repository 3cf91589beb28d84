-- Version 1: the lease table and the membership table.
--
-- {leases} and {workers} are replaced by the schema-qualified, quoted table names of the store's
-- configuration (validated identifiers only). Ids are compared byte-wise (COLLATE "C"), the order
-- the contract's types sort in. Sequence numbers are ordered through `checkpoint_order`: a rank
-- digit, then the sequence number left-padded to 128 digits and the sub-sequence to 20, so text
-- order is progress order.

CREATE TABLE IF NOT EXISTS {leases} (
    app                    text COLLATE "C" NOT NULL,
    stream                 text COLLATE "C" NOT NULL,
    shard                  text COLLATE "C" NOT NULL,
    owner                  text COLLATE "C",
    token                  bigint NOT NULL DEFAULT 0 CHECK (token >= 0),
    deadline               timestamptz,
    checkpoint             text,
    checkpoint_sub         numeric(20, 0) NOT NULL DEFAULT 0 CHECK (checkpoint_sub >= 0),
    checkpoint_order       text COLLATE "C" GENERATED ALWAYS AS (
        CASE
            WHEN checkpoint IS NULL THEN NULL
            WHEN checkpoint = 'SHARD_END' THEN '2'
            WHEN checkpoint ~ '^[0-9]{1,128}$'
                THEN '1' || lpad(checkpoint, 128, '0') || lpad(checkpoint_sub::text, 20, '0')
            ELSE '0'
        END
    ) STORED,
    pending_checkpoint     text,
    pending_checkpoint_sub numeric(20, 0) NOT NULL DEFAULT 0 CHECK (pending_checkpoint_sub >= 0),
    parents                text[] NOT NULL DEFAULT '{}',
    claim                  text COLLATE "C",
    owner_switches         bigint NOT NULL DEFAULT 0 CHECK (owner_switches >= 0),
    PRIMARY KEY (app, stream, shard)
);

CREATE TABLE IF NOT EXISTS {workers} (
    app        text COLLATE "C" NOT NULL,
    worker     text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (app, worker)
);
