//! `seam`, the one user-facing command: cluster objects and the lab.
//!
//! `cli.rs` is the grammar (clap), `commands/<verb>.rs` does one verb each, `controller.rs` is
//! the one way to the controller. The work itself is in libraries: `seam_model::manifest` (what
//! `seam apply` reads), `seam_firewall::explain`, `seam_conformance` (with `seam_lab::conformance`
//! for `--dataplane`), `seam_lab` (the lab and its demo) and `seam_client`.

mod agents;
mod cli;
mod commands;
mod controller;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};
use commands::{
    apply, audit, conformance, delete, explain, external, flows, get, lab, node, proxy, segment,
    tenant, vm,
};

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("seam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Lab { command } => lab::run(command)?,
        Cmd::Apply {
            file,
            wait,
            timeout,
            target,
        } => apply::run(&file, wait.then_some(timeout), &target)?,
        Cmd::Get {
            kind,
            name,
            output,
            target,
        } => get::run(&kind, name.as_deref(), output, &target)?,
        Cmd::Delete {
            kind,
            name,
            namespace,
            target,
        } => delete::run(&kind, &name, namespace.as_deref(), &target)?,
        Cmd::Explain {
            src,
            dst,
            port,
            json,
            output,
            target,
        } => explain::run(
            &src,
            &dst,
            &port,
            json || output == cli::ExplainOutput::Json,
            &target,
        )?,
        Cmd::External { command } => external::run(command)?,
        Cmd::Segment { command } => segment::run(command)?,
        Cmd::Vm { command } => vm::run(command)?,
        Cmd::Tenant { command } => tenant::run(command)?,
        Cmd::Audit {
            limit,
            output,
            target,
        } => audit::run(limit, output, &target)?,
        Cmd::Proxy { listen, target } => proxy::run(listen, &target)?,
        Cmd::Flows(args) => flows::run(&args)?,
        Cmd::Conformance { command } => return conformance::run(command),
        Cmd::Node { command } => node::run(command)?,
    }
    Ok(ExitCode::SUCCESS)
}
