//! [`Membership`] for [`RedisStore`]: operation 12, the live workers of an app in one sorted
//! set scored by heartbeat expiry (server milliseconds), each write one script.

use async_trait::async_trait;
use checkpoint_core::{Error, HeartbeatTtl, Membership, Result, WorkerId};
use redis::Value;

use crate::reply;
use crate::scripts;
use crate::store::RedisStore;

#[async_trait]
impl Membership for RedisStore {
    /// Operation 12, register (`scripts::REGISTER`, [`checkpoint_core::rules::register_worker`]):
    /// one script, so atomic: the expiry becomes server `TIME` + ttl and the instance entry this
    /// handle's nonce, unless another instance's entry is live ([`Error::WorkerIdInUse`],
    /// nothing written).
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let args = [
            worker.to_string(),
            ttl.as_millis().to_string(),
            self.instance.to_string(),
        ];
        let keys = [self.keys.workers(), self.keys.worker_instances()];
        match self.eval(&scripts::REGISTER, &keys, &args).await? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::worker_id_in_use(worker)),
            other => Err(reply::protocol_error(format!("register replied {other:?}"))),
        }
    }

    /// Operation 12, heartbeat (`scripts::HEARTBEAT`, [`checkpoint_core::rules::heartbeat`]):
    /// one script moves the expiry only if the worker is registered by this handle's instance;
    /// not registered is [`Error::NotFound`] (deregistered or pruned: register again), another
    /// instance's entry [`Error::WorkerIdInUse`].
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let args = [
            worker.to_string(),
            ttl.as_millis().to_string(),
            self.instance.to_string(),
        ];
        let keys = [self.keys.workers(), self.keys.worker_instances()];
        match self.eval(&scripts::HEARTBEAT, &keys, &args).await? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::worker_not_found(worker)),
            Value::Int(2) => Err(Error::worker_id_in_use(worker)),
            other => Err(reply::protocol_error(format!(
                "heartbeat replied {other:?}"
            ))),
        }
    }

    /// One script: members whose expiry is after the server's `TIME`, sorted by id.
    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let value = self
            .eval(&scripts::LIVE_WORKERS, &[self.keys.workers()], &[])
            .await?;
        let mut workers = reply::items(value)?
            .iter()
            .map(|v| {
                let id = reply::text(v)?;
                WorkerId::new(id.as_str())
                    .map_err(|e| Error::corrupt(&id, scripts::field::WORKER, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        workers.sort();
        Ok(workers)
    }

    /// One script (`scripts::DEREGISTER`): removes the worker and its instance entry; absent
    /// is not an error.
    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        let keys = [self.keys.workers(), self.keys.worker_instances()];
        self.eval(&scripts::DEREGISTER, &keys, &[worker.to_string()])
            .await?;
        Ok(())
    }

    /// One script: removes members whose expiry is at or before the server's `TIME`. If the
    /// reply is lost and the call retried, the count is that of the retry (possibly 0).
    async fn prune_dead_workers(&self) -> Result<usize> {
        match self
            .eval(
                &scripts::PRUNE,
                &[self.keys.workers(), self.keys.worker_instances()],
                &[],
            )
            .await?
        {
            Value::Int(n) => {
                usize::try_from(n).map_err(|_| reply::protocol_error(format!("prune replied {n}")))
            }
            other => Err(reply::protocol_error(format!("prune replied {other:?}"))),
        }
    }
}
