//! In-process tests of the controller API, driven through `seam-client` over a temporary Unix
//! socket (no root needed).

mod api;
mod blocks;
mod fuzz;
mod server;
mod watch;
