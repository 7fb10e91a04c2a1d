//! The edge control library: load the XDP admission filter, apply policy, run packets through
//! it, attach it to interfaces, and read its counters. The `edge` command is a thin front end.
pub mod api;
pub mod bitmap;
pub mod btf;
pub mod capture;
pub mod client;
pub mod daemon;
pub mod error;
pub mod filter;
pub mod fleet;
pub mod guard;
pub mod history;
pub mod ifaddrs;
pub mod import;
pub mod policy;
pub mod replay;
pub mod stats;
pub mod store;
pub mod syncookies;
pub mod text;
pub mod ticket;
pub mod token;
pub mod visitors;

pub use error::{Error, Result};
pub use filter::{detach, pinned_stats, Filter, Judgement, Maps};
pub use history::VisitorHistory;
pub use policy::{Mode, Policy};
pub use stats::Stats;
pub use visitors::Day;
