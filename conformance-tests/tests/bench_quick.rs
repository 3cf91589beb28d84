//! The benchmark program builds and runs: a few iterations of every measurement against SQLite
//! and the memory store (`--quick`). It checks the exit status only, never speed.
#![cfg(feature = "sqlite")]

use std::process::Command;

#[test]
fn bench_runs_quickly_on_sqlite() {
    for backend in ["sqlite", "memory"] {
        let output = Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(["--quick", "--backend", backend])
            .output()
            .expect("the bench binary starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "bench --quick --backend {backend} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("| {backend} | checkpoint |")),
            "no checkpoint row for {backend}:\n{stdout}"
        );
    }
}

/// The consumer benchmark (`--consumer --quick`) on SQLite: throughput against the raw loop,
/// an idle worker in a child process, and failover after killing a child process; exit status
/// and table rows only, never speed.
#[test]
fn consumer_bench_runs_quickly_on_sqlite() {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--consumer", "--quick", "--backend", "sqlite"])
        .output()
        .expect("the bench binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench --consumer --quick failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for table in ["records/s", "peak RSS MiB", "median ms"] {
        assert!(stdout.contains(table), "no {table:?} table:\n{stdout}");
    }
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("| sqlite |"))
        .count();
    assert_eq!(rows, 3, "one row per table for sqlite:\n{stdout}");
}
