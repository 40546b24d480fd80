//! `seam conformance netpol --cases FILE [--dataplane]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::cli::ConformanceCmd;

/// Runs one `seam conformance` suite.
pub(crate) fn run(command: ConformanceCmd) -> anyhow::Result<ExitCode> {
    let ConformanceCmd::Netpol {
        cases,
        model,
        dataplane,
        lab_name,
        nodes,
        probe_timeout_ms,
        keep,
    } = command;
    let dataplane = if dataplane {
        Some(seam_lab::conformance::Options {
            lab: lab_name,
            nodes,
            timeout: std::time::Duration::from_millis(probe_timeout_ms),
            keep,
            converge: std::time::Duration::from_secs(20),
        })
    } else {
        None
    };
    netpol(&cases, model.as_deref(), dataplane.as_ref())
}

/// `seam conformance netpol --cases FILE`: exit status 1 when a case fails.
fn netpol(
    cases: &Path,
    model: Option<&Path>,
    dataplane: Option<&seam_lab::conformance::Options>,
) -> anyhow::Result<ExitCode> {
    let model_path = match model {
        Some(m) => m.to_path_buf(),
        None => cases.parent().unwrap_or(Path::new(".")).join("model.json"),
    };
    let read = |p: &Path| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {} as JSON", p.display()))
    };
    let (cases_doc, model_doc) = (read(cases)?, read(&model_path)?);
    let suite = seam_conformance::Suite::from_json(&cases_doc, &model_doc);
    let (failed, summary) = match dataplane {
        Some(opts) => {
            // Malformed cases fail before anything is built.
            let report = (|| -> anyhow::Result<_> {
                let suite = suite?;
                seam_lab::conformance::pods_to_build(&suite)?;
                // Ctrl-C or SIGTERM removes the lab and exits 130.
                seam_lab::teardown_on_signal(
                    false,
                    |labs| {
                        for lab in labs {
                            eprintln!("\nseam: interrupted; removing lab {lab}");
                        }
                    },
                    |_, _| {},
                );
                Ok(seam_lab::conformance::run(
                    &suite,
                    opts,
                    crate::commands::lab::bin_dir()?,
                )?)
            })()
            .with_context(|| format!("run {} through the dataplane", cases.display()))?;
            (report.failed(), report.summary())
        }
        None => {
            let mut engine = seam_conformance::Engine::explained_by(seam::explain::reason_text);
            let report = suite
                .and_then(|suite| seam_conformance::check(&suite, &mut engine))
                .with_context(|| format!("run {}", cases.display()))?;
            for line in &report.failures {
                println!("{line}");
            }
            (report.failed(), report.summary())
        }
    };
    println!("{summary}");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
