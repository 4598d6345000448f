//! The integration tests, as one crate (one link instead of one per file): the binary
//! driven on fixture trees, hostile trees, faults and the daemon. `util` holds the
//! helpers and the NFD feature-file parser, `bed` the one test bed.

mod bed;
mod cli;
mod daemon;
mod faults;
mod fixtures;
mod hostile;
mod incomplete;
mod layout;
mod nfd_model;
mod nfd_watch;
mod operator;
mod people;
mod proptest_trees;
mod reference_hook;
mod torture;
mod util;
