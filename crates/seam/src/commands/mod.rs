//! One file per verb of `seam` (see `cli.rs` for the grammar): each reads its input, asks a
//! library or the controller, and prints.

pub(crate) mod apply;
pub(crate) mod audit;
pub(crate) mod conformance;
pub(crate) mod delete;
pub(crate) mod explain;
pub(crate) mod external;
pub(crate) mod flows;
pub(crate) mod get;
pub(crate) mod lab;
pub(crate) mod node;
pub(crate) mod proxy;
pub(crate) mod realization;
pub(crate) mod segment;
pub(crate) mod services;
pub(crate) mod tenant;
pub(crate) mod vm;

use std::io::Read;

use anyhow::Context;

/// The text of `file`, or of standard input for `-`.
pub(crate) fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {file}"))
    }
}
