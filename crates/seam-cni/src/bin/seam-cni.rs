//! The `seam-cni` CNI plug-in binary: gathers the environment and stdin, runs one
//! invocation, prints the outcome. Stdout carries only the CNI result or error object.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .read_to_end(&mut stdin)
        .map(|_| stdin);
    let outcome = seam_cni::run_process(std::env::vars_os(), read);

    // Write errors are ignored on purpose: `println!` would panic on a closed pipe, and
    // there is nowhere left to report a failure to write the report.
    if !outcome.log.is_empty() {
        let mut stderr = std::io::stderr().lock();
        for line in &outcome.log {
            let _ = writeln!(stderr, "seam-cni: {line}");
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(outcome.exit_code)
}
