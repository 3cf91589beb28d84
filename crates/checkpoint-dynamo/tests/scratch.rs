#![allow(missing_docs)]
use checkpoint_core::conformance::{self, random_app};
use checkpoint_core::{AppName, Store};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scratch() {
    let endpoint = std::env::var("CHECKPOINT_DYNAMO_ENDPOINT").unwrap();
    let only = std::env::var("ONLY").unwrap();
    let table = format!("scratch-{}", random_app("t"));
    let factory = move |app: AppName| {
        let c = DynamoConfig::new(&table).map(|c| {
            c.with_endpoint(&endpoint)
                .with_skew_allowance(Duration::from_millis(50))
        });
        async move {
            let s: Arc<dyn Store> = Arc::new(DynamoStore::open(c?, app).await?);
            Ok(s)
        }
    };
    let t = Instant::now();
    conformance::run_selected(&factory, |n| only.split(',').any(|o| o == n))
        .await
        .assert_passed();
    println!("took {:?}", t.elapsed());
}
