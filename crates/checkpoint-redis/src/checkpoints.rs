//! [`Checkpointer`] for [`RedisStore`]: operations 5, 6, 14 and the admin reset, each one
//! script (see [`crate::scripts`]) except the fetch, one `HMGET`.

use async_trait::async_trait;
use checkpoint_core::{
    Checkpointer, Error, FencingToken, Lease, LeaseKey, Position, Result, WorkerId,
};
use redis::Value;

use crate::reply::{self, Status};
use crate::scripts;
use crate::store::{RedisStore, lost, record, unexpected};

#[async_trait]
impl Checkpointer for RedisStore {
    /// Operation 5, one script (`rules::checkpoint`): writes only if owner and token match
    /// (fencing) and the position is not behind the stored one (monotonic positions; sequence
    /// numbers compared as decimal text without leading zeros, by length then as text, so
    /// numerically). Repeating an equal checkpoint is accepted, which is what makes a retry
    /// after a lost reply safe.
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.write_position(key, worker, token, position, "commit")
            .await
    }

    /// Operation 14, one script (`rules::prepare_checkpoint`): fenced and checked exactly like a
    /// checkpoint; stores the pending position.
    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.write_position(key, worker, token, position, "prepare")
            .await
    }

    /// Operation 6: one `HMGET` of the record's fields, atomic by itself and always read from
    /// the server this store writes to (strongly consistent on one primary).
    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        let lease_key = self.keys.lease(key);
        let value: Value = self
            .command(|| {
                redis::cmd("HMGET")
                    .arg(&lease_key)
                    .arg(&scripts::FIELDS[..])
                    .clone()
            })
            .await?;
        reply::decode_hmget(key, value)
    }

    /// Admin reset, one script (`rules::reset_checkpoint`): the one write that may move a
    /// position backwards; ownership and token are untouched.
    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        let args = match position {
            Some(p) => vec!["1".to_owned(), p.encode(), p.sub_sequence().to_string()],
            None => vec!["0".to_owned(), String::new(), "0".to_owned()],
        };
        let reply = self
            .lease_script(&scripts::RESET_CHECKPOINT, key, false, args)
            .await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::NotFound => Err(Error::lease_not_found(key)),
            _ => Err(unexpected(key, &reply)),
        }
    }
}

impl RedisStore {
    async fn write_position(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
        mode: &str,
    ) -> Result<Lease> {
        let [text, sub] = reply::position_args(position);
        let args = vec![
            worker.to_string(),
            token.0.to_string(),
            mode.to_owned(),
            text,
            sub,
        ];
        let reply = self
            .lease_script(&scripts::CHECKPOINT, key, false, args)
            .await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::Lost => Err(lost(key, worker, token)),
            Status::Regression => {
                let stored = record(reply)?.checkpoint.ok_or_else(|| {
                    reply::protocol_error("REGRESSION without a stored checkpoint")
                })?;
                Err(Error::CheckpointRegression {
                    key: key.clone(),
                    stored,
                    attempted: position.clone(),
                })
            }
            _ => Err(unexpected(key, &reply)),
        }
    }
}
