//! Runs the conformance suite against every in-tree backend (see `tests/`), and keeps the
//! deliberately broken stores ([`mutants`]) that prove the suite can fail.

use std::sync::Arc;

use checkpoint_core::conformance::SuiteReport;
use checkpoint_core::{AppName, Capabilities, MemoryDatabase, Store};

pub mod hooks;
pub mod mutants;

/// A factory for the memory reference store: every handle of one app shares one database.
pub fn memory_factory()
-> impl Fn(AppName) -> std::future::Ready<checkpoint_core::Result<Arc<dyn Store>>> + Send + Sync {
    let db = MemoryDatabase::new();
    move |app| std::future::ready(Ok(Arc::new(db.open(app)) as Arc<dyn Store>))
}

/// Prints the capability table of the backends a test ran, in the README's format.
pub fn print_capability_table(rows: &[Capabilities]) {
    println!("{}", Capabilities::table_header());
    for row in rows {
        println!("{}", row.table_row());
    }
}

/// Prints the capability rows of the backends a test ran, in the README's format, with a last
/// column naming what the suite could not cover on each (its backend scenarios without
/// hooks, with why), from the run's report.
pub fn print_capability_rows(rows: &[(Capabilities, &SuiteReport)]) {
    let header =
        Capabilities::table_header().replacen(" |\n", " | not covered by the suite |\n", 1);
    println!("{header} --- |");
    for (capabilities, report) in rows {
        println!(
            "{} {} |",
            capabilities.table_row(),
            report.not_covered_summary()
        );
    }
}
