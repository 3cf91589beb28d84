//! Each retry of a store call (the stores' own `Backoff`, the one retry layer) and of a source
//! call (the worker's) is one `tracing` event naming the operation, attempt, delay and error
//! kind.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_core::{Backoff, Error};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_retry_is_one_event_with_operation_attempt_delay_and_kind() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let backoff = Backoff {
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_attempts: 3,
        budget: Duration::from_secs(5),
    };
    let calls = AtomicU32::new(0);
    let result: checkpoint_core::Result<()> = backoff
        .retry_named("renew_many", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::backend_message("probe", true, "connection reset")) }
        })
        .await;
    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let events: Vec<&str> = text.lines().filter(|l| l.contains("retrying")).collect();
    // Three tries: two retries, the last failure is returned without an event.
    assert_eq!(events.len(), 2, "{text}");
    for (i, event) in events.iter().enumerate() {
        assert!(event.contains("operation=\"renew_many\""), "{event}");
        assert!(event.contains(&format!("attempt={}", i + 1)), "{event}");
        assert!(event.contains("delay_ms="), "{event}");
        assert!(event.contains("error_kind=Backend"), "{event}");
    }
    // A failed condition is never retried, so it logs nothing.
    let before = text.len();
    let _: checkpoint_core::Result<()> = backoff
        .retry_named("get_lease", |_| async {
            Err(Error::invalid("worker_id", "bad"))
        })
        .await;
    assert_eq!(captured.0.lock().unwrap().len(), before);
}
