//! Lease rows: reading one into a [`Lease`] (every column checked, a value this store would
//! never have written is [`Error::Corrupt`]) and writing one back with the narrowest statement
//! that records what a rule changed.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    AppName, Error, FencingToken, Lease, LeaseKey, Position, Result, ShardId, StreamName, WorkerId,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, params};

use crate::error::{STORE, from_sqlite};
use crate::schema::Sql;

/// Milliseconds since 1970 of `t`; an instant the `deadline_ms` column cannot hold is a
/// backend error.
pub(crate) fn to_ms(t: SystemTime) -> Result<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            Error::backend_message(
                STORE,
                false,
                "the clock is before 1970 or beyond year 292 million",
            )
        })
}

/// The instant `ms` milliseconds after 1970 (negative values clamp to 1970).
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs())
}

/// Reads the lease row of `app` and `key` ([`Sql::select_lease`]), or `None`. The row was
/// found by its key, so its `stream` and `shard` are `key`'s and are not read back.
pub(crate) fn read_lease(
    conn: &Connection,
    sql: &Sql,
    app: &AppName,
    key: &LeaseKey,
) -> Result<Option<Lease>> {
    let mut stmt = conn
        .prepare_cached(&sql.select_lease)
        .map_err(from_sqlite)?;
    let mut rows = stmt
        .query(params![
            app.as_str(),
            key.stream.as_str(),
            key.shard.as_str()
        ])
        .map_err(from_sqlite)?;
    match rows.next().map_err(from_sqlite)? {
        Some(row) => decode_fields(row, 0, key.clone()).map(Some),
        None => Ok(None),
    }
}

/// Writes `lease` over `before`, the row as [`read_lease`] read it in the same write
/// transaction (`None`: absent). When only the deadline changed (a renewal, a holder's repeated
/// `get_lease`) or only the checkpoint columns (a checkpoint, a prepared checkpoint, a reset),
/// one `UPDATE` of those columns; otherwise the whole row (insert or update). The columns left
/// alone hold exactly what `before` decoded from them, so the row reads back as `lease`.
pub(crate) fn write_lease(
    conn: &Connection,
    sql: &Sql,
    app: &AppName,
    before: Option<&Lease>,
    lease: &Lease,
) -> Result<()> {
    let key = &lease.key;
    let same_holder = before.is_some_and(|b| {
        b.key == *key
            && b.owner == lease.owner
            && b.token == lease.token
            && b.parents == lease.parents
            && b.claim == lease.claim
    });
    let same_checkpoint = before.is_some_and(|b| {
        b.checkpoint == lease.checkpoint
            && b.pending_checkpoint == lease.pending_checkpoint
            && b.owner_switches_since_checkpoint == lease.owner_switches_since_checkpoint
    });
    let same_deadline = before.is_some_and(|b| b.deadline == lease.deadline);
    let deadline = lease.deadline.map(to_ms).transpose()?;
    let changed = if same_holder && same_checkpoint {
        conn.prepare_cached(&sql.update_deadline)
            .and_then(|mut s| {
                s.execute(params![
                    app.as_str(),
                    key.stream.as_str(),
                    key.shard.as_str(),
                    deadline
                ])
            })
            .map_err(from_sqlite)?
    } else if same_holder && same_deadline {
        conn.prepare_cached(&sql.update_checkpoint)
            .and_then(|mut s| {
                s.execute(params![
                    app.as_str(),
                    key.stream.as_str(),
                    key.shard.as_str(),
                    lease.checkpoint.as_ref().map(Position::encode),
                    lease
                        .checkpoint
                        .as_ref()
                        .map(|p| p.sub_sequence().to_string()),
                    lease.pending_checkpoint.as_ref().map(Position::encode),
                    lease
                        .pending_checkpoint
                        .as_ref()
                        .map(|p| p.sub_sequence().to_string()),
                    lease.owner_switches_since_checkpoint.to_string(),
                ])
            })
            .map_err(from_sqlite)?
    } else {
        return upsert_lease(conn, sql, app, lease, deadline);
    };
    if changed != 1 {
        // The row was read in this transaction, which holds the write lock.
        return Err(Error::backend_message(
            STORE,
            false,
            format!("the lease row {key} changed {changed} times in one update"),
        ));
    }
    Ok(())
}

/// Writes the whole row of `lease` (insert or update).
fn upsert_lease(
    conn: &Connection,
    sql: &Sql,
    app: &AppName,
    lease: &Lease,
    deadline: Option<i64>,
) -> Result<()> {
    let parents = lease
        .parents
        .iter()
        .map(ShardId::as_str)
        .collect::<Vec<_>>()
        .join(",");
    let mut stmt = conn
        .prepare_cached(&sql.upsert_lease)
        .map_err(from_sqlite)?;
    stmt.execute(params![
        app.as_str(),
        lease.key.stream.as_str(),
        lease.key.shard.as_str(),
        lease.owner.as_ref().map(WorkerId::as_str),
        lease.token.0.to_string(),
        deadline,
        lease.checkpoint.as_ref().map(Position::encode),
        lease
            .checkpoint
            .as_ref()
            .map(|p| p.sub_sequence().to_string()),
        lease.pending_checkpoint.as_ref().map(Position::encode),
        lease
            .pending_checkpoint
            .as_ref()
            .map(|p| p.sub_sequence().to_string()),
        parents,
        lease.claim.as_ref().map(WorkerId::as_str),
        lease.owner_switches_since_checkpoint.to_string(),
    ])
    .map_err(from_sqlite)?;
    Ok(())
}

/// Every row of a list query (`stream, shard`, then the columns of [`Sql::select_lease`]).
pub(crate) fn collect_leases(rows: rusqlite::Result<rusqlite::Rows<'_>>) -> Result<Vec<Lease>> {
    let mut rows = rows.map_err(from_sqlite)?;
    let mut leases = Vec::new();
    while let Some(row) = rows.next().map_err(from_sqlite)? {
        leases.push(decode_lease(row)?);
    }
    Ok(leases)
}

/// Reads a row of `stream, shard` and the columns of [`Sql::select_lease`] into a [`Lease`].
fn decode_lease(row: &Row<'_>) -> Result<Lease> {
    let raw_stream = text_ref(row, 0, &"?", "stream")?.unwrap_or_default();
    let raw_shard = text_ref(row, 1, &"?", "shard")?.unwrap_or_default();
    let id = || format!("{raw_stream}/{raw_shard}");
    let stream =
        StreamName::new(raw_stream).map_err(|e| Error::corrupt(id(), "stream", e.to_string()))?;
    let shard =
        ShardId::new(raw_shard).map_err(|e| Error::corrupt(id(), "shard", e.to_string()))?;
    decode_fields(row, 2, LeaseKey::new(stream, shard))
}

/// Reads the columns of [`Sql::select_lease`], from column `first` on, into the [`Lease`] of
/// `key`; a value this store would never have written is [`Error::Corrupt`] naming the column.
fn decode_fields(row: &Row<'_>, first: usize, key: LeaseKey) -> Result<Lease> {
    // The record's id for errors; formatted only when one is reported.
    let rid: &dyn fmt::Display = &key;
    let owner = text(row, first, rid, "owner")?
        .map(|o| WorkerId::new(o).map_err(|e| Error::corrupt(rid, "owner", e.to_string())))
        .transpose()?;
    let token = FencingToken(
        u64_text(row, first + 1, rid, "token")?
            .ok_or_else(|| Error::corrupt(rid, "token", "is NULL"))?,
    );
    let deadline = match row.get_ref(first + 2).map_err(from_sqlite)? {
        ValueRef::Null => None,
        ValueRef::Integer(ms) if ms >= 0 => Some(from_ms(ms)),
        other => {
            return Err(Error::corrupt(
                rid,
                "deadline_ms",
                format!("{other:?} is not milliseconds since 1970"),
            ));
        }
    };
    let checkpoint = position(row, first + 3, rid, "checkpoint", "checkpoint_sub")?;
    let pending = position(row, first + 5, rid, "pending", "pending_sub")?;
    let parents = match text_ref(row, first + 7, rid, "parents")? {
        None => return Err(Error::corrupt(rid, "parents", "is NULL")),
        Some("") => Vec::new(),
        Some(p) => p
            .split(',')
            .map(|s| ShardId::new(s).map_err(|e| Error::corrupt(rid, "parents", e.to_string())))
            .collect::<Result<Vec<_>>>()?,
    };
    let claim = text(row, first + 8, rid, "claim")?
        .map(|c| WorkerId::new(c).map_err(|e| Error::corrupt(rid, "claim", e.to_string())))
        .transpose()?;
    let owner_switches = u64_text(row, first + 9, rid, "owner_switches")?
        .ok_or_else(|| Error::corrupt(rid, "owner_switches", "is NULL"))?;
    Ok(Lease {
        key,
        owner,
        token,
        deadline,
        checkpoint,
        pending_checkpoint: pending,
        parents,
        claim,
        owner_switches_since_checkpoint: owner_switches,
    })
}

/// A TEXT column, borrowed, or `None` for NULL; any other type is corrupt.
fn text_ref<'r>(
    row: &'r Row<'_>,
    idx: usize,
    id: &dyn fmt::Display,
    field: &'static str,
) -> Result<Option<&'r str>> {
    match row.get_ref(idx).map_err(from_sqlite)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::corrupt(id, field, "is not UTF-8")),
        other => Err(Error::corrupt(
            id,
            field,
            format!("{:?} is not text", other.data_type()),
        )),
    }
}

/// A TEXT column, or `None` for NULL; any other type is corrupt.
pub(crate) fn text(
    row: &Row<'_>,
    idx: usize,
    id: &dyn fmt::Display,
    field: &'static str,
) -> Result<Option<String>> {
    text_ref(row, idx, id, field).map(|t| t.map(str::to_owned))
}

/// A `u64` stored as canonical decimal TEXT (an INTEGER is accepted when not negative).
fn u64_text(
    row: &Row<'_>,
    idx: usize,
    id: &dyn fmt::Display,
    field: &'static str,
) -> Result<Option<u64>> {
    match row.get_ref(idx).map_err(from_sqlite)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => u64::try_from(i)
            .map(Some)
            .map_err(|_| Error::corrupt(id, field, format!("{i} is negative"))),
        ValueRef::Text(bytes) => {
            let s = std::str::from_utf8(bytes)
                .map_err(|_| Error::corrupt(id, field, "is not UTF-8"))?;
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::corrupt(
                    id,
                    field,
                    format!("{s:?} is not an unsigned decimal number"),
                ));
            }
            s.parse::<u64>()
                .map(Some)
                .map_err(|_| Error::corrupt(id, field, format!("{s:?} does not fit in 64 bits")))
        }
        other => Err(Error::corrupt(
            id,
            field,
            format!("{:?} is not a number", other.data_type()),
        )),
    }
}

/// A position column (`idx`) and its sub-sequence column (`idx + 1`).
fn position(
    row: &Row<'_>,
    idx: usize,
    id: &dyn fmt::Display,
    field: &'static str,
    sub_field: &'static str,
) -> Result<Option<Position>> {
    let Some(encoded) = text_ref(row, idx, id, field)? else {
        return Ok(None);
    };
    let sub = u64_text(row, idx + 1, id, sub_field)?.unwrap_or(0);
    Position::decode(field, encoded, sub)
        .map(Some)
        .map_err(|e| {
            let reason = match e {
                Error::InvalidInput { reason, .. } => reason,
                other => other.to_string(),
            };
            Error::corrupt(id, field, reason)
        })
}
