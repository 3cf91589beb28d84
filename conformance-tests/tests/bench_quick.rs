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
