//! `seam conformance netpol --cases FILE [--dataplane]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use seam_conformance::ConformanceError;

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
        segment_encap,
    } = command;
    let dataplane = if dataplane {
        Some(seam_lab::conformance::Options {
            lab: lab_name,
            nodes,
            timeout: std::time::Duration::from_millis(probe_timeout_ms),
            keep,
            converge: std::time::Duration::from_secs(20),
            segment_encap,
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
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
    let cases_text = read(cases)?;
    let model_text = read(&model_path);
    // The errors come in the order they always have: the cases file (unreadable, not JSON), then
    // the model file (unreadable, not JSON), then the suite's shape. `from_texts` parses the cases
    // first, so an unreadable model can stand in as an empty text until its error's turn.
    let suite = match seam_conformance::Suite::from_texts(
        &cases_text,
        model_text.as_deref().unwrap_or_default(),
    ) {
        Err(ConformanceError::NotJson { file, message })
            if file == "cases" || model_text.is_ok() =>
        {
            let path = if file == "cases" { cases } else { &model_path };
            return Err(anyhow!(message).context(format!("parse {} as JSON", path.display())));
        }
        suite => {
            model_text?;
            suite
        }
    };
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
            let mut engine = seam_conformance::Engine::explained_by(seam_policy::reason_text);
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
